import CBlockSys
import Glibc
import Logging
import VirtioBlk
import VirtioCore
import VirtioSpec
import VirtioVFIO

/// The userspace path: a virtio-blk PCI function over VFIO, after DRIVER_OK.
/// Owns the session (transport, DMA arena, queues not yet handed out); the
/// device is reset and released when the last queue, pool and `BlockDevice`
/// referring to it are gone.
final class VFIOBlockHost<Q: BlockIOLayout & ~Copyable>: BlockHost, @unchecked Sendable {
  private var session: VirtioPCISession<Q>
  private let lock = HostLock()
  private var config: BlockConfig
  private var currentInfo: BlockDeviceInfo
  private var taken: [Bool]
  /// Queue 0, made at open for GET_ID, waiting to be handed out.
  private var first: BlockQueue?
  let geometry: SharedGeometry
  let options: BlockOpenOptions
  let logger: Logger

  init(session: consuming VirtioPCISession<Q>, config: BlockConfig, options: BlockOpenOptions, logger: Logger) {
    self.session = session
    self.config = config
    self.options = options
    self.logger = logger
    self.geometry = SharedGeometry(capacitySectors: config.capacitySectors)
    self.taken = Array(repeating: false, count: self.session.queueCount)
    self.currentInfo = BlockDeviceInfo(target: "", backend: .virtio, capacityBytes: 0, logicalBlockSize: 512, physicalBlockSize: 512,
      optimalIOSize: 0, maxTransferBytes: 0, queueCount: 0, queueDepth: 0, readOnly: true, supportsFlush: false,
      supportsDiscard: false, supportsWriteZeroes: false, writebackCache: false, serial: nil, details: "")
    self.currentInfo = describe(serial: nil)
  }

  var info: BlockDeviceInfo { lock.withLock { currentInfo } }

  /// One line: ring layout, interrupts and the features that matter.
  private func describe(serial: String?) -> BlockDeviceInfo {
    let f = session.features
    let names = f.names(device: .block).filter { !$0.hasPrefix("bit") }.joined(separator: ",")
    let vectors = session.transport.enabledVectorCount
    let address = session.transport.address
    var info = BlockDeviceInfo(
      virtio: config, target: "pci:\(address)", queueCount: session.queueCount,
      queueDepth: session.queueCount > 0 && session.queues.contains(0) ? session.queues[0].size : options.queueDepth,
      maxTransferBytes: options.maxTransferBytes, serial: serial,
      details: "virtio-blk over VFIO, \(Q.layout) ring, \(vectors > 0 ? "\(vectors) MSI-X vectors" : "no interrupts"), features \(names)")
    if options.readOnly { info.readOnly = true }
    return info
  }

  /// Makes queue 0 and asks the device for its serial (GET_ID, §5.2.6).
  func start() {
    let q: BlockQueue
    do throws(BlockIOError) {
      q = try makeQueueLocked(0)
    } catch {
      logger.warning("could not make queue 0 at open", metadata: ["reason": "\(error.message)"])
      return
    }
    var queue = q
    var serial: String? = nil
    if let region = try? session.transport.dma.allocate(byteCount: 64, alignment: 64) {
      serial = VirtioHostSupport.readSerial(&queue, into: region, timeoutMilliseconds: options.setupTimeoutMilliseconds)
    }
    first = consume queue
    lock.withLock { currentInfo = describe(serial: serial) }
  }

  func makeQueue(_ index: Int) throws(BlockIOError) -> BlockQueue {
    try lock.withLock { () throws(BlockIOError) -> BlockQueue in
      if index == 0, let q = first.take() { return q }
      return try makeQueueLocked(index)
    }
  }

  private func makeQueueLocked(_ index: Int) throws(BlockIOError) -> BlockQueue {
    guard index >= 0, index < session.queueCount else {
      throw BlockIOError(
        .invalidArgument,
        "queue \(index): pci:\(session.transport.address) has \(session.queueCount) request queue(s) set up (num_queues with VIRTIO_BLK_F_MQ)")
    }
    guard !taken[index], session.queues.contains(index) else {
      throw BlockIOError(.busy, "queue \(index) of pci:\(session.transport.address) was already handed out; each thread makes its own")
    }
    taken[index] = true
    let doorbell = session.transport.doorbell(queue: index)
    let fd = ownEventFD(index)
    let q = session.takeQueue(index)
    do throws(VirtioError) {
      let requests = try BlockRequestQueue(
        queue: q, config: config, doorbell: doorbell, memory: &session.transport.dma, maxTransferBytes: options.maxTransferBytes)
      return BlockQueue(virtio: requests, eventFD: fd, geometry: geometry, index: index, owner: self)
    } catch {
      throw BlockIOError(error)
    }
  }

  /// The queue's MSI-X eventfd, when no other queue shares its vector (two
  /// threads sleeping on one eventfd would steal each other's wakeups).
  private func ownEventFD(_ index: Int) -> Int32 {
    guard let v = session.transport.vector(ofQueue: index) else { return -1 }
    for j in 0..<session.queueCount where j != index && session.transport.vector(ofQueue: j) == v { return -1 }
    return session.transport.interruptEventFD(queue: index) ?? -1
  }

  func makeBufferPool(count: Int, bufferSize: Int) throws(BlockIOError) -> BlockBufferPool {
    let size = try BlockBufferPool.checkedBufferSize(count: count, bufferSize: bufferSize)
    return try lock.withLock { () throws(BlockIOError) -> BlockBufferPool in
      do throws(VirtioError) {
        let region = try session.transport.dma.allocate(byteCount: size * count, alignment: 4096)
        return BlockBufferPool(region: region, bufferSize: size, count: count, owner: self)
      } catch {
        throw BlockIOError(error)
      }
    }
  }

  /// §4.1.5.1.2: the config vector fired (or config_generation moved) — re-read
  /// the config (§2.5.1, consistently) and publish a new capacity to the queues.
  func refreshGeometry() -> BlockDeviceInfo? {
    lock.withLock { () -> BlockDeviceInfo? in
      if let fd = session.transport.configInterruptEventFD {
        // With a config vector, only its interrupt says the config changed.
        guard vio_wait_readable(fd, 0) == 1 else { return nil }
        var n: UInt64 = 0
        if read(fd, &n, 8) == 8 { currentInfo.configInterrupts &+= n }
      }
      guard let fresh = try? BlockConfig(reading: session.transport, features: session.features) else { return nil }
      guard fresh.capacitySectors != config.capacitySectors else { return nil }
      logger.notice(
        "capacity changed", metadata: ["from_sectors": "\(config.capacitySectors)", "to_sectors": "\(fresh.capacitySectors)"])
      config.capacitySectors = fresh.capacitySectors
      geometry.capacitySectors.store(fresh.capacitySectors, ordering: .relaxed)
      currentInfo.capacityBytes = fresh.capacityBytes
      return currentInfo
    }
  }
}

extension BlockDeviceInfo {
  /// The info of a virtio-blk device from its config snapshot (§5.2.4).
  package init(
    virtio c: BlockConfig, target: String, queueCount: Int, queueDepth: Int, maxTransferBytes: Int, serial: String?,
    details: String
  ) {
    var maxTransfer = maxTransferBytes
    if let segMax = c.segmentsMax, let sizeMax = c.segmentSizeMax {
      // Device-written u32s: their product can exceed Int (found by fuzz-device-config).
      maxTransfer = min(maxTransfer, Int(clamping: UInt64(segMax) * UInt64(sizeMax)))
    }
    self.init(
      target: target, backend: .virtio, capacityBytes: c.capacityBytes, logicalBlockSize: Int(c.blockSize),
      physicalBlockSize: Int(c.blockSize) << Int(c.physicalBlockExponent), optimalIOSize: Int(clamping: UInt64(c.optIOBlocks) * UInt64(c.blockSize)),
      maxTransferBytes: maxTransfer, queueCount: queueCount, queueDepth: queueDepth, readOnly: c.readOnly,
      supportsFlush: c.supportsFlush, supportsDiscard: c.supportsDiscard, supportsWriteZeroes: c.supportsWriteZeroes,
      writebackCache: c.writeback, serial: serial, details: details)
  }
}
