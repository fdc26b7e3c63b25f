import Logging
import VirtioBlk
import VirtioCore
import VirtioSpec
import VirtioVFIO
import VirtioVhostUser

/// An open block device: a virtio-blk PCI function driven from this process
/// over VFIO, a vhost-user-blk backend driven from this process over its unix
/// socket (`vhost-user:/tmp/blk.sock`), or a kernel block device / file
/// through io_uring — the same API every way.
///
///     var dev = try BlockDevice.open("pci:0000:00:03.0")     // or "/dev/vdb"
///     var q = try dev.makeQueue(0)                          // one per thread
///     var pool = try dev.makeBufferPool(count: 32, bufferSize: 4096)
///     let b = pool.allocate()!
///     _ = q.read(into: b, at: 0, tag: 1); q.kick()
///     while q.poll() == nil { _ = q.wait(timeoutMilliseconds: 1000) }
///
/// Queues and pools keep the device open; it is closed (a virtio device reset
/// and handed back to VFIO, or the file closed) when the last of them and
/// this value are gone.
public struct BlockDevice: ~Copyable {
  let driver: any BlockDriver

  package init(driver: any BlockDriver) { self.driver = driver }

  /// Opens `target`. Errors say what to do (bind the function to vfio-pci,
  /// raise the memlock limit, use another file system for O_DIRECT, ...).
  public static func open(
    _ target: BlockTarget, options: BlockOpenOptions = BlockOpenOptions(), logger: Logger = Logger(label: "blockio")
  ) throws(VirtioError) -> BlockDevice {
    switch target {
    case .path(let p):
      return BlockDevice(driver: try KernelBlockDriver.open(p, options: options))
    case .pci(let a):
      return BlockDevice(driver: try openPCI(a, options: options, logger: logger))
    case .vhostUser(let e):
      return BlockDevice(driver: try openVhostUser(e, options: options, logger: logger))
    }
  }

  /// `pci:DDDD:BB:DD.F`, `vhost-user:/path.sock` or a path.
  public static func open(
    _ target: String, options: BlockOpenOptions = BlockOpenOptions(), logger: Logger = Logger(label: "blockio")
  ) throws(VirtioError) -> BlockDevice {
    try open(BlockTarget(parsing: target), options: options, logger: logger)
  }

  /// Geometry and capabilities (the capacity as last read; see `refreshGeometry`).
  public var info: BlockDeviceInfo { driver.info }

  /// Queue `index` (0..<info.queueCount), for one thread. Each index once (virtio).
  public func makeQueue(_ index: Int = 0) throws(VirtioError) -> BlockQueue { try driver.makeQueue(index) }

  /// `count` buffers of `bufferSize` bytes (rounded up to 4 KiB) the device can
  /// reach: IOMMU-mapped DMA memory on VFIO, page-aligned memory for O_DIRECT.
  public func makeBufferPool(count: Int, bufferSize: Int) throws(VirtioError) -> BlockBufferPool {
    try driver.makeBufferPool(count: count, bufferSize: bufferSize)
  }

  /// Re-reads the geometry after the device announced a configuration change
  /// (virtio: the config MSI-X vector, §4.1.5.1.2, e.g. a resize); queues see a
  /// new capacity from their next `kick()`. Returns the new info when the capacity changed.
  public func refreshGeometry() -> BlockDeviceInfo? { driver.refreshGeometry() }

  /// Surprise removal (a hot-unplugged or unbound function over VFIO): true
  /// once the bus asked for the device back or it reads all-ones. The device is
  /// then released so the removal completes, and every queue stops: requests
  /// in flight never complete, `brokenReason` says the device was removed.
  /// Control path (one poll(2) and a register read): call it now and then,
  /// e.g. with `refreshGeometry`. A queue sleeping on its interrupt notices
  /// the removal request by itself.
  public func checkRemoved() -> Bool { driver.checkRemoved() }

  /// The CPU the OS delivers queue `index`'s completion interrupt to (VFIO:
  /// the vector's effective affinity; nil: no interrupt, or not known). A
  /// thread that sleeps on the queue (`.interrupts`, `.hybrid`) and runs on
  /// that CPU is woken without a second CPU being woken for it (in a TCG
  /// guest that cross-CPU wakeup cost QD1 half its rate: docs/PERFORMANCE.md).
  public func interruptCPU(queue index: Int) -> Int? { driver.interruptCPU(queue: index) }

  /// Closes this handle (the device closes when its queues and pools are gone too).
  public consuming func close() {}

  // MARK: transports

  /// A `pci:` function over VFIO (the fallback to the kernel driver is `openPCI`'s).
  static func openVFIO(_ address: PCIAddress, options: BlockOpenOptions, logger: Logger) throws(VirtioError) -> any BlockDriver {
    var vfio = VFIOPCIOptions()
    vfio.hugePages = options.hugePages
    return try openVirtio(VFIOPCITransport.open(address, options: vfio, logger: logger), options: options, logger: logger)
  }

  /// A `pci:` function without an IOMMU (`allowNoIOMMU`), physical
  /// addresses: on vfio-pci in VFIO's no-IOMMU mode (MSI-X kept), else on
  /// uio_pci_generic (polled queues).
  static func openNoIOMMU(_ address: PCIAddress, options: BlockOpenOptions, logger: Logger) throws(VirtioError) -> any BlockDriver {
    if PCIFunction(address, logger: logger).inNoIOMMUGroup {
      var vfio = VFIOPCIOptions()
      vfio.allowNoIOMMU = true
      return try openVirtio(VFIOPCITransport.open(address, options: vfio, logger: logger), options: options, logger: logger)
    }
    return try openVirtio(UIOPCITransport.open(address, logger: logger), options: options, logger: logger)
  }

  /// A vhost-user-blk backend. Its shared memory is sized here, once (the
  /// backend maps it at SET_MEM_TABLE): rings, request headers and
  /// `bufferMemoryBytes` for buffer pools.
  static func openVhostUser(_ endpoint: VhostUserEndpoint, options: BlockOpenOptions, logger: Logger) throws(VirtioError) -> any BlockDriver {
    let depth = max(3, min(options.queueDepth, 1024))
    var vhost = VhostUserOptions()
    vhost.maxQueueSize = depth
    vhost.pages = options.hugePages == .required ? .hugeRequired : options.hugePages == .disabled ? .small : .hugePreferred
    // Per queue: ring (16 B descriptors, avail, used), an indirect table and a
    // request slot per descriptor; at most 64 queues (num_queues) are set up.
    let queues = min(max(options.queues ?? 64, 1), 64)
    let perQueue = depth * (16 + 2 + 8 + 16 * max(options.maxIndirect, 1) + 64) + 16 << 10
    vhost.memoryBytes = options.bufferMemoryBytes + queues * perQueue + (1 << 20)
    var limited = options
    limited.queueDepth = depth
    limited.queues = queues
    do throws(VirtioError) {
      let transport = try VhostUserTransport.open(endpoint, deviceType: .block, options: vhost, logger: logger)
      return try openVirtio(transport, options: limited, logger: logger)
    } catch {
      throw error
    }
  }
}
