import CVirtioAtomics

/// How a queue tells its device there is new work — the "driver notification"
/// of §2.9 (PCI: a write to the queue's notify address, §4.1.5.2). A plain
/// value a queue owner can hold on its own thread: no reference counting, no
/// existential, no allocation when rung.
@frozen public enum Doorbell: BitwiseCopyable, @unchecked Sendable {
  /// 16-bit MMIO write of the queue index (PCI without NOTIFICATION_DATA).
  case mmio16(UnsafeMutableRawPointer)
  /// 32-bit MMIO write of the notification value (PCI with NOTIFICATION_DATA).
  case mmio32(UnsafeMutableRawPointer)
  /// A C function with a context pointer (simulated device, vhost-user eventfd).
  case function(@convention(c) (UnsafeMutableRawPointer?, UInt32) -> Void, UnsafeMutableRawPointer?)
  /// No notification needed (a device that polls).
  case none

  /// Rings the bell with `value` (`Virtqueue.notificationValue`).
  @inlinable public func ring(_ value: UInt32) {
    switch self {
    case .mmio16(let p):
      // SAFETY: `p` is the queue's notify address inside a BAR the transport mapped
      // and keeps mapped for the queue's lifetime.
      vio_mmio_write16(p, UInt16(truncatingIfNeeded: value))
    case .mmio32(let p):
      vio_mmio_write32(p, value)
    case .function(let f, let context):
      f(context, value)
    case .none:
      break
    }
  }
}
