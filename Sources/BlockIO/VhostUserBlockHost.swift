import Glibc
import Logging
import VirtioBlk
import VirtioCore
import VirtioSpec
import VirtioVhostUser

/// The userspace path over vhost-user: a virtio-blk device played by a backend
/// process (qemu-storage-daemon's vhost-user-blk export, SPDK), after
/// DRIVER_OK. The twin of `VFIOBlockHost`: owns the session (transport, shared
/// memory, queues not yet handed out); the backend's rings are stopped and
/// everything released when the last queue, pool and `BlockDevice` referring
/// to it are gone.
///
/// The shared memory is sized at open (the backend maps it once, with
/// SET_MEM_TABLE): rings, request headers and `BlockOpenOptions.bufferMemoryBytes`
/// for buffer pools.
final class VhostUserBlockHost<Q: BlockIOLayout & ~Copyable>: BlockHost, @unchecked Sendable {
  private var session: VhostUserSession<Q>
  private let lock = HostLock()
  private let config: BlockConfig
  private var currentInfo: BlockDeviceInfo
  private var taken: [Bool]
  /// Queue 0, made at open for GET_ID, waiting to be handed out.
  private var first: BlockQueue?
  let geometry: SharedGeometry
  let options: BlockOpenOptions
  let logger: Logger

  init(session: consuming VhostUserSession<Q>, config: BlockConfig, options: BlockOpenOptions, logger: Logger) {
    self.session = session
    self.config = config
    self.options = options
    self.logger = logger
    self.geometry = SharedGeometry(capacitySectors: config.capacitySectors)
    self.taken = Array(repeating: false, count: self.session.queueCount)
    self.currentInfo = BlockDeviceInfo(
      target: "", backend: .virtio, capacityBytes: 0, logicalBlockSize: 512, physicalBlockSize: 512, optimalIOSize: 0,
      maxTransferBytes: 0, queueCount: 0, queueDepth: 0, readOnly: true, supportsFlush: false, supportsDiscard: false,
      supportsWriteZeroes: false, writebackCache: false, serial: nil, details: "")
    self.currentInfo = describe(serial: nil)
  }

  var info: BlockDeviceInfo { lock.withLock { currentInfo } }

  private var target: String { "\(session.transport.endpoint)" }

  /// One line: ring layout, shared memory and the features that matter.
  private func describe(serial: String?) -> BlockDeviceInfo {
    let f = session.features
    let names = f.names(device: .block).filter { !$0.hasPrefix("bit") }.joined(separator: ",")
    let sharedMiB = session.transport.dma.byteCount >> 20
    let huge = session.transport.dma.usesHugePages
    var info = BlockDeviceInfo(
      virtio: config, target: target, queueCount: session.queueCount,
      queueDepth: session.queueCount > 0 && session.queues.contains(0) ? session.queues[0].size : options.queueDepth,
      maxTransferBytes: options.maxTransferBytes, serial: serial,
      details:
        "virtio-blk over vhost-user (\(session.transport.endpoint.path)), \(Q.layout) ring, call eventfds, \(sharedMiB) MiB shared memory\(huge ? " (2 MiB pages)" : ""), features \(names)"
    )
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
        "queue \(index): \(target) has \(session.queueCount) request queue(s) set up (num_queues with VIRTIO_BLK_F_MQ; qemu-storage-daemon: num-queues=N)")
    }
    guard !taken[index], session.queues.contains(index) else {
      throw BlockIOError(.busy, "queue \(index) of \(target) was already handed out; each thread makes its own")
    }
    taken[index] = true
    let doorbell = session.transport.doorbell(queue: index)
    // Every queue has a call eventfd of its own: a queue may sleep on it.
    let fd = options.interrupts ? session.transport.interruptEventFD(queue: index) ?? -1 : -1
    let q = session.takeQueue(index)
    do throws(VirtioError) {
      let requests = try BlockRequestQueue(
        queue: q, config: config, doorbell: doorbell, memory: &session.transport.dma, maxTransferBytes: options.maxTransferBytes)
      return BlockQueue(virtio: requests, eventFD: fd, geometry: geometry, index: index, owner: self)
    } catch {
      throw BlockIOError(error)
    }
  }

  func makeBufferPool(count: Int, bufferSize: Int) throws(BlockIOError) -> BlockBufferPool {
    let size = try BlockBufferPool.checkedBufferSize(count: count, bufferSize: bufferSize)
    return try lock.withLock { () throws(BlockIOError) -> BlockBufferPool in
      do throws(VirtioError) {
        let region = try session.transport.dma.allocate(byteCount: size * count, alignment: 4096)
        return BlockBufferPool(region: region, bufferSize: size, count: count, owner: self)
      } catch {
        let left = session.transport.dma.byteCount - session.transport.dma.usedBytes
        throw BlockIOError(
          .noMemory,
          "\(target): the shared memory the backend maps has \(left >> 10) KiB left, a pool of \(count) × \(size) bytes needs \((size * count) >> 10) KiB; open with a larger BlockOpenOptions.bufferMemoryBytes (it is sized once, at open)"
        )
      }
    }
  }

  /// vhost-user's config space is the snapshot GET_CONFIG returned at open;
  /// this frontend takes no CONFIG_CHANGE_MSG, so the capacity never changes.
  func refreshGeometry() -> BlockDeviceInfo? { nil }
}

extension BlockDevice {
  /// §3.1.1 over vhost-user with the virtio-blk policy (§5.2.3): shared memory
  /// sized for the rings and `bufferMemoryBytes`, then the queues in the
  /// negotiated layout — the one place split and packed part ways.
  static func openVhostUser(_ endpoint: VhostUserEndpoint, options: BlockOpenOptions, logger: Logger) throws(BlockIOError) -> any BlockHost {
    let depth = max(3, min(options.queueDepth, 1024))
    var vhost = VhostUserOptions()
    vhost.maxQueueSize = depth
    vhost.pages = options.hugePages == .required ? .hugeRequired : options.hugePages == .disabled ? .small : .hugePreferred
    // Per queue: ring (16 B descriptors, avail, used), an indirect table and a
    // request slot per descriptor; at most 64 queues (num_queues) are set up.
    let queues = min(max(options.queues ?? 64, 1), 64)
    let perQueue = depth * (16 + 2 + 8 + 16 * max(options.maxIndirect, 1) + 64) + 16 << 10
    vhost.memoryBytes = options.bufferMemoryBytes + queues * perQueue + (1 << 20)
    var plan = VhostUserOpenPlan(policy: BlockFeaturePolicy.policy)
    plan.options = vhost
    plan.maxQueueSize = depth
    plan.maxIndirect = options.maxIndirect
    let wanted = options.queues
    // §5.2.2: num_queues request queues with VIRTIO_BLK_F_MQ, else one.
    plan.queueCount = { f, t in
      let n = f.contains(bit: BlockFeature.mq) ? max(1, min(t.queueCount, Int(t.readConfig16(VirtioBlkConfig.Offset.num_queues)))) : 1
      return min(n, max(1, wanted ?? n), 64)
    }
    do throws(VirtioError) {
      var transport = try VhostUserTransport.open(endpoint, deviceType: .block, options: vhost, logger: logger)
      let features = try VhostUser.negotiate(&transport, plan: plan)
      let config = try BlockConfig(reading: transport, features: features)
      if features.contains(bit: VirtioFeature.ringPacked) {
        let s = try VhostUser.setUp(PackedVirtqueue.self, transport: transport, features: features, plan: plan)
        let host = VhostUserBlockHost(session: s, config: config, options: options, logger: logger)
        host.start()
        return host
      } else {
        let s = try VhostUser.setUp(SplitVirtqueue.self, transport: transport, features: features, plan: plan)
        let host = VhostUserBlockHost(session: s, config: config, options: options, logger: logger)
        host.start()
        return host
      }
    } catch {
      throw BlockIOError(error)
    }
  }
}
