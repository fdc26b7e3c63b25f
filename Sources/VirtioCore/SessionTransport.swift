import Logging
import VirtioSpec

/// What waiting for a queue's interrupt came to (an MSI-X vector's eventfd
/// over VFIO, a call eventfd over vhost-user).
public enum InterruptWait: Equatable, Sendable {
  /// The interrupt fired `count` times since it was last consumed.
  case fired(count: UInt64)
  case timedOut
  /// The wait itself failed (errno).
  case failed(errno: Int32)
}

/// What the addresses in the rings mean to the device.
public enum DMAAddressing: String, Sendable {
  /// I/O virtual addresses an IOMMU translates (VFIO with ACCESS_PLATFORM).
  case iommu
  /// Guest-physical addresses, nothing in between (no IOMMU: uio_pci_generic).
  case physical
  /// Offsets into memory the backend maps (vhost-user).
  case sharedMemory = "shared-memory"
  /// This process's own addresses (a simulated device).
  case host
}

/// A transport a `VirtioSession` can own: the registers of `Transport`, plus
/// the memory the device reaches, its interrupts and what it adds to the
/// opening sequence. Everything a session does is written once against this
/// protocol; a transport keeps only what is its own (VFIO: container, group,
/// BARs, MSI-X; vhost-user: socket, shared memory, reconnect; the simulator).
public protocol SessionTransport: Transport & ~Copyable {
  /// The transport's DMA allocator: rings, request headers and buffer pools come from here.
  associatedtype Memory: DMAAllocator & ~Copyable
  var dma: Memory { get set }
  var logger: Logger { get }
  /// How a user names this device: "pci:0000:00:04.0", "vhost-user:/run/blk.sock".
  var target: String { get }
  /// One phrase for device summaries: "VFIO, 3 MSI-X vectors", "vhost-user (/run/blk.sock), 64 MiB shared memory".
  var summary: String { get }
  /// What the device makes of the addresses in the rings (reports say it).
  var dmaAddressing: DMAAddressing { get }
  /// What the DRIVER_OK log line adds (memory, vectors).
  var setupMetadata: Logger.Metadata { get }

  /// §3.1.1 step 4: the driver's policy with the bits this transport needs or
  /// cannot carry (VFIO: ACCESS_PLATFORM; vhost-user: none of it).
  func negotiationPolicy(_ driver: FeaturePolicy) -> FeaturePolicy
  /// Adds what this transport knows to a failed negotiation's message.
  func explainNegotiationFailure(_ error: inout VirtioError)

  /// Before the queues (§3.1.1 step 7): routes interrupts for `queues` queues
  /// and the configuration change (VFIO: MSI-X vectors to eventfds). Returns
  /// the vectors in use (0: none — the queues are polled).
  mutating func routeInterrupts(queues: Int, enabled: Bool) throws(VirtioError) -> Int
  /// The vector queue `index` is given at set-up, once interrupts are routed (nil: none).
  func setupVector(forQueue index: Int) -> UInt16?
  /// The vector queue `index` was configured with (nil: none, or the transport has no vectors).
  func vector(ofQueue index: Int) -> UInt16?
  /// The descriptor a queue's interrupt makes readable (nil: none).
  func interruptEventFD(queue index: Int) -> Int32?
  /// The descriptor the configuration-change interrupt makes readable (nil: none).
  var configInterruptEventFD: Int32? { get }
  /// Waits for queue `index`'s interrupt (control path and simple drivers).
  func waitForInterrupt(queue index: Int, timeoutMilliseconds: Int) -> InterruptWait
  /// The CPU the OS delivers queue `index`'s interrupt to (nil: none, or not
  /// known): a thread that sleeps on that interrupt wakes soonest there.
  func interruptCPU(queue index: Int) -> Int?

  /// A reset as hard as the transport can make it (VFIO: function reset, then
  /// the virtio reset; vhost-user: the rings stop). True when more than the
  /// virtio reset ran.
  mutating func resetDevice() throws(VirtioError) -> Bool

  /// Surprise removal: a descriptor that becomes readable when the bus asks
  /// for the device back (VFIO's device-request and error interrupts; nil: none).
  var removalEventFD: Int32? { get }
  /// The device is being taken away or is gone (asked back, or its registers
  /// read all-ones). Control path: a cheap check, not for every burst.
  func deviceRemoved() -> Bool
  /// Lets a removed device go so its removal can complete: stop it if it still
  /// answers, release what holds it; the queues' memory stays valid for their
  /// owners, their doorbells harmless. Idempotent.
  mutating func releaseRemovedDevice()
  /// After a virtio reset in `VirtioSession.reinitialize`: routes the
  /// configuration-change interrupt as `routeInterrupts` did (VFIO: msix_config;
  /// the MSI-X block and its eventfds stay), before the queues get their vectors again.
  mutating func restoreInterruptRouting() throws(VirtioError)

  /// The device went away and may come back with the rings where they stopped
  /// (a vhost-user backend that hung up). One cheap check: call it when idle.
  func peerGone() -> Bool
  /// Connects to the device again and restarts every ring from `resume`
  /// (queue index → position; see `ConstructibleVirtqueue.deviceResumePosition`).
  mutating func reconnect(resume: [Int: RingPosition], timeoutMilliseconds: Int?) throws(VirtioError)
}

extension SessionTransport where Self: ~Copyable {
  /// Transports whose interrupts a virtio reset does not touch (vhost-user, the simulator).
  public mutating func restoreInterruptRouting() throws(VirtioError) {}

  /// Transports whose device cannot come back: never gone in that sense.
  public func peerGone() -> Bool { false }

  /// Transports that do not know where their interrupts go (vhost-user: eventfds from the backend).
  public func interruptCPU(queue index: Int) -> Int? { nil }

  /// Transports without surprise removal (vhost-user: a hang-up is `peerGone`).
  public var removalEventFD: Int32? { nil }
  public func deviceRemoved() -> Bool { false }
  public mutating func releaseRemovedDevice() {}

  public mutating func reconnect(resume: [Int: RingPosition], timeoutMilliseconds: Int?) throws(VirtioError) {
    throw VirtioError(.unsupported, "\(target): this transport cannot reconnect to a device; reopen it")
  }

  /// The descriptor queue `index` may sleep on alone: its interrupt's, unless
  /// another of the first `queues` queues shares the vector (two sleepers on
  /// one eventfd would steal each other's wake-ups) — then nil: poll.
  public func ownInterruptEventFD(queue index: Int, among queues: Int) -> Int32? {
    if let v = vector(ofQueue: index) {
      for j in 0..<queues where j != index && vector(ofQueue: j) == v { return nil }
    }
    return interruptEventFD(queue: index)
  }
}

/// What to negotiate and how to set the queues up, for a transport `T`.
public struct SessionPlan<T: SessionTransport & ~Copyable>: Sendable {
  /// Features the driver needs / would like. VERSION_1 is always required.
  public var policy: FeaturePolicy
  /// Largest ring to set up (the device's maximum when smaller).
  public var maxQueueSize: Int = 256
  /// Per-queue limit instead of `maxQueueSize` (e.g. different RX and TX ring sizes), when set.
  public var queueSizeLimit: (@Sendable (Int) -> Int)? = nil
  /// Indirect table entries per descriptor when INDIRECT_DESC is negotiated (0: no indirect tables).
  public var maxIndirect: Int = 8
  /// Route interrupts so queues can sleep (VFIO: MSI-X vectors; vhost-user always has call eventfds).
  public var interrupts: Bool = true
  /// How many queues to set up, given the accepted features (default: every queue the device has).
  public var queueCount: @Sendable (FeatureSet, borrowing T) -> Int = { _, t in t.queueCount }

  public init(policy: FeaturePolicy) { self.policy = policy }
}

/// A transport without interrupts (uio_pci_generic with INTx off, the
/// simulator): no vectors to route, no eventfd to sleep on — every queue polls.
public protocol PolledSessionTransport: SessionTransport & ~Copyable {}

extension PolledSessionTransport where Self: ~Copyable {
  public mutating func routeInterrupts(queues: Int, enabled: Bool) throws(VirtioError) -> Int { 0 }
  public func setupVector(forQueue index: Int) -> UInt16? { nil }
  public func vector(ofQueue index: Int) -> UInt16? { nil }
  public func interruptEventFD(queue index: Int) -> Int32? { nil }
  public var configInterruptEventFD: Int32? { nil }
  public func explainNegotiationFailure(_ error: inout VirtioError) {}
  /// Nothing to wait on: EINVAL, as VFIO answers for a queue without a vector.
  public func waitForInterrupt(queue index: Int, timeoutMilliseconds: Int) -> InterruptWait { .failed(errno: 22) }
}
