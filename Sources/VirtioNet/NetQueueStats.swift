/// Per-queue-pair counters. The owning thread updates them in place (plain
/// adds, no atomics); another thread reads a published copy (PacketIO's stats
/// board). Never logged from a burst: counted here instead.
@frozen public struct NetQueueStats: Sendable, Equatable, BitwiseCopyable {
  public var rxPackets: UInt64 = 0
  public var rxBytes: UInt64 = 0
  /// Frames the device returned that the driver could not accept: shorter
  /// than the virtio-net header, a MRG_RXBUF num_buffers of 0 or more than
  /// the ring holds, an empty continuation buffer, checksum offsets outside
  /// the frame, or a GSO header (§5.1.6.4.1) not negotiated or out of bounds.
  public var rxErrors: UInt64 = 0
  /// Times the RX ring could not be refilled because the pool was empty.
  public var rxNoBuffers: UInt64 = 0
  public var txPackets: UInt64 = 0
  public var txBytes: UInt64 = 0
  /// Packets `transmit` did not take because the TX ring was full (the
  /// caller dropped or retried them).
  public var txRingFull: UInt64 = 0
  /// Packets `transmit` refused because the handle was malformed (no room for
  /// the header, outside its buffer, not from this pool).
  public var txErrors: UInt64 = 0
  /// Doorbell writes (available-buffer notifications the device asked for).
  public var notifications: UInt64 = 0
  /// Of those, doorbells the device did not ask for: the TX ring stayed full
  /// with nothing completed (`NetQueuePair.nudgeStalledTransmit`).
  public var txStallNotifications: UInt64 = 0
  /// Used-buffer interrupts taken (the queue's MSI-X eventfd fired while the
  /// owner slept on it). Counted by whoever waits: PacketIO.
  public var interrupts: UInt64 = 0
  /// Packets dropped by the caller after `transmit` refused them (a
  /// forwarder's drop counter; the driver itself never drops a TX packet).
  public var txDropped: UInt64 = 0
  /// Frames lost before the driver saw them because the RX ring was full:
  /// the kernel path's PACKET_STATISTICS tp_drops (a virtio-net device does
  /// not report its own, §5.1: back-pressure or a silent drop in the device).
  public var rxDropped: UInt64 = 0
  /// Received frames that spanned several buffers (MRG_RXBUF, §5.1.6.4), and
  /// transmitted packets of several buffers (descriptor chains): both also
  /// counted in rxPackets / txPackets.
  public var rxChains: UInt64 = 0
  public var txChains: UInt64 = 0
  /// Large TCP segments received as such (GUEST_TSO4/6: gso_type set).
  public var rxGSO: UInt64 = 0
  /// GSO packets handed to the device to segment (HOST_TSO4/6).
  public var txGSO: UInt64 = 0
  /// GSO packets segmented in software (the device lacks the offload), and
  /// the frames that made: each such packet is counted once in txPackets.
  public var txSegmented: UInt64 = 0
  public var txSegments: UInt64 = 0

  public init() {}

  /// Every counter, for field-wise arithmetic and reports (control path).
  public static var counters: [WritableKeyPath<NetQueueStats, UInt64>] {
    [
      \.rxPackets, \.rxBytes, \.rxErrors, \.rxNoBuffers, \.txPackets, \.txBytes, \.txRingFull, \.txErrors, \.notifications,
      \.interrupts, \.txDropped, \.rxDropped, \.rxChains, \.txChains, \.rxGSO, \.txGSO, \.txSegmented, \.txSegments,
      \.txStallNotifications,
    ]
  }

  /// Field-wise sum (to total several queues).
  public static func + (a: NetQueueStats, b: NetQueueStats) -> NetQueueStats {
    var s = a
    for c in counters { s[keyPath: c] = a[keyPath: c] &+ b[keyPath: c] }
    return s
  }
}
