import Synchronization

/// The capacity a device reports now, shared by the device (which re-reads it
/// after a configuration change, §5.2.2 / §4.1.5.1.2) and its queues (which
/// check ranges against it on their own threads). Queues hold it unowned: the
/// device's driver keeps it alive as long as any queue.
@usableFromInline package final class SharedGeometry: Sendable {
  /// Capacity in 512-byte sectors.
  @usableFromInline package let capacitySectors: Atomic<UInt64>
  /// The device was removed (hot-unplug): every queue stops at its next empty poll.
  @usableFromInline package let removed: Atomic<Bool>
  /// Bumped by the driver each time it finds the device gone; a queue that
  /// sees a new value restarts its ring (DeviceRecovery.swift).
  @usableFromInline package let generation = Atomic<UInt32>(0)

  package init(capacitySectors: UInt64) {
    self.capacitySectors = Atomic(capacitySectors)
    self.removed = Atomic(false)
  }

  @inlinable var sectors: UInt64 { capacitySectors.load(ordering: .relaxed) }
  @inlinable var isRemoved: Bool { removed.load(ordering: .relaxed) }
  /// One relaxed load: the hot path's only look at recovery.
  @inlinable var currentGeneration: UInt32 { generation.load(ordering: .relaxed) }
}
