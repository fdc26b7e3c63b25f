import Glibc
import VirtioVFIO

/// What an open device is behind a `BlockDevice`: the VFIO transport, the
/// kernel file, or (in tests) a simulated device. Control path only — the
/// data path never sees this existential; its queues hold concrete backends.
package protocol BlockDriver: AnyObject, Sendable {
  var info: BlockDeviceInfo { get }
  func makeQueue(_ index: Int) throws(VirtioError) -> BlockQueue
  func makeBufferPool(count: Int, bufferSize: Int) throws(VirtioError) -> BlockBufferPool
  /// Re-reads the geometry after a configuration change; the new info when the capacity changed.
  func refreshGeometry() -> BlockDeviceInfo?
  /// True once the device was removed (hot-unplug; virtio over VFIO): it is
  /// released and every queue reports `.deviceRemoved` at its next empty poll.
  func checkRemoved() -> Bool
  /// The CPU queue `index`'s interrupt is delivered to (nil: none, or not known).
  func interruptCPU(queue index: Int) -> Int?
}

extension BlockDriver {
  /// Drivers without interrupts of their own (the kernel path: io_uring).
  package func interruptCPU(queue index: Int) -> Int? { nil }
}

/// How to open a device.
public struct BlockOpenOptions: Sendable {
  /// Requests one queue holds: the virtio ring size (the device's maximum when
  /// smaller; a power of two on split rings) or the io_uring size.
  public var queueDepth: Int = 256
  /// Queues to set up (virtio: at most the device's num_queues; nil: all of them;
  /// kernel path: how many io_urings may be made, default 16).
  public var queues: Int? = nil
  /// Route the queues' MSI-X vectors to eventfds so queues can sleep (VFIO).
  public var interrupts: Bool = true
  /// O_DIRECT on the kernel path (bypass the page cache).
  public var directIO: Bool = true
  /// Refuse every write, whatever the device allows.
  public var readOnly: Bool = false
  /// Largest data transfer of one device request; larger I/O is split.
  public var maxTransferBytes: Int = 1 << 20
  /// Indirect descriptor table entries per request (virtio, when INDIRECT_DESC is offered).
  public var maxIndirect: Int = 16
  /// Pages behind the VFIO DMA memory.
  public var hugePages: HugePagePolicy = .preferred
  /// A `pci:` function the userspace path cannot take (no IOMMU, VFIO modules
  /// missing, function not on vfio-pci, a legacy-only device or one lacking
  /// ACCESS_PLATFORM) is handed back to the kernel's virtio-blk driver and its
  /// block device opened instead (io_uring), with the reason logged at warning
  /// level and in `BlockDeviceInfo.fallback`. false: the open fails instead.
  public var kernelFallback: Bool = true
  /// In a machine without an IOMMU (most VMs), drive a `pci:` function bound
  /// to uio_pci_generic from this process with physical addresses (locked 2 MiB
  /// hugepages, addresses from /proc/self/pagemap; root needed) instead of
  /// falling back to the kernel. The device can then reach all memory: a
  /// driver bug is not contained by an IOMMU. Explicit opt-in, off by default.
  public var allowNoIOMMU: Bool = false
  /// vhost-user: bytes of the shared memory kept for buffer pools. The backend
  /// maps that memory once, at open, so it is sized then (rings and request
  /// headers come on top); `makeBufferPool` fails beyond it.
  public var bufferMemoryBytes: Int = 64 << 20
  /// What happens to requests in flight when the device goes away and comes
  /// back (a vhost-user backend restart): failed with `.deviceLost` (default),
  /// or posted again to the device once it is back.
  public var inFlightAfterRecovery: InFlightPolicy = .fail
  /// A queue that stopped trusting its device (it returned a buffer it was
  /// never given, a length beyond what was posted…) resets the device and
  /// sets it up again, as after DEVICE_NEEDS_RESET, instead of staying broken.
  /// Off by default: a device that misbehaves once may do so again.
  public var resetBrokenQueues = false
  /// How long a device that went away (a vhost-user backend that hung up) may
  /// take to come back before its queues break with the reason.
  public var reconnectTimeoutMilliseconds: Int = 10_000
  /// Per-request time limit for the blocking helpers (GET_ID at open).
  public var setupTimeoutMilliseconds: Int = 10_000

  public init() {}
}

/// A pthread mutex for the drivers' control-path state (no Foundation).
final class DriverLock: @unchecked Sendable {
  private let m: UnsafeMutablePointer<pthread_mutex_t>

  init() {
    // SAFETY: one mutex, initialised here and destroyed in deinit.
    m = .allocate(capacity: 1)
    pthread_mutex_init(m, nil)
  }

  deinit {
    pthread_mutex_destroy(m)
    m.deallocate()
  }

  func withLock<R: ~Copyable, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
    pthread_mutex_lock(m)
    defer { pthread_mutex_unlock(m) }
    return try body()
  }
}
