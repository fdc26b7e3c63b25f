/// What every measured run counts: items done (ring-bench's ops, net-bench's
/// packets), the time, heap allocations, doorbells, and whether a queue broke.
public struct RunCounts {
  public var items: UInt64 = 0
  public var nanoseconds: UInt64 = 0
  public var allocations: UInt64 = 0
  public var notifications: UInt64 = 0
  public var broken = false

  public init() {}

  /// Millions of items per second.
  public var millionsPerSecond: Double { Double(items) * 1e3 / Double(max(nanoseconds, 1)) }
  public var allocationsPerItem: Double { Double(allocations) / Double(max(items, 1)) }
  public var notificationsPerItem: Double { Double(notifications) / Double(max(items, 1)) }
}
