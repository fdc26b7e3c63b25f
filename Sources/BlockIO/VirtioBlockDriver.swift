import VirtioOS
import CBlockSys
import Glibc
import Logging
import VirtioBlk
import VirtioCore
import VirtioSpec

/// The userspace path: a virtio-blk device after DRIVER_OK, over any
/// transport (VFIO, vhost-user, the simulator). Owns the session (transport,
/// DMA memory, queues not yet handed out); the device is reset and released
/// when the last queue, pool and `BlockDevice` referring to it are gone.
final class VirtioBlockDriver<T: SessionTransport & ~Copyable, Q: BlockIOLayout & ~Copyable>: BlockDriver, @unchecked Sendable {

  var session: VirtioSession<T, Q>
  let lock = DriverLock()
  private var config: BlockConfig
  private var currentInfo: BlockDeviceInfo
  var taken: [Bool]
  /// Queue 0, made at open for GET_ID, waiting to be handed out.
  var first: BlockQueue?
  /// The device went away and may come back (VirtioBlockDriver+Recovery.swift).
  var phase = RecoveryPhase.live
  /// Per queue: the generation it last restarted its ring for.
  var parkedGeneration: [UInt32]
  /// Queues their owners dropped: where each ring's next request would go (see `released`).
  var releasedQueues: [Int: RingPosition] = [:]
  var recoveries: UInt64 = 0
  let geometry: SharedGeometry
  let options: BlockOpenOptions
  let logger: Logger

  init(session: consuming VirtioSession<T, Q>, config: BlockConfig, options: BlockOpenOptions, logger: Logger) {
    self.session = session
    self.config = config
    self.options = options
    self.logger = logger
    self.geometry = SharedGeometry(capacitySectors: config.capacitySectors)
    self.taken = Array(repeating: false, count: self.session.queueCount)
    self.parkedGeneration = Array(repeating: 0, count: self.session.queueCount)
    self.currentInfo = BlockDeviceInfo(virtio: config, target: "", queueCount: 0, queueDepth: 0, maxTransferBytes: 0, serial: nil, details: "")
    self.currentInfo = describe(serial: nil)
  }

  var info: BlockDeviceInfo { lock.withLock { currentInfo } }

  var target: String { session.transport.target }

  /// One line: transport, ring layout and the features that matter.
  private func describe(serial: String?) -> BlockDeviceInfo {
    let names = session.features.names(device: .block).filter { !$0.hasPrefix("bit") }.joined(separator: ",")
    var info = BlockDeviceInfo(
      virtio: config, target: target, queueCount: session.queueCount,
      queueDepth: session.queueCount > 0 && session.queues.contains(0) ? session.queues[0].size : options.queueDepth,
      maxTransferBytes: options.maxTransferBytes, serial: serial,
      details: "virtio-blk over \(session.transport.summary), \(Q.layout) ring, features \(names)")
    if options.readOnly { info.readOnly = true }
    info.dmaAddressing = session.transport.dmaAddressing
    return info
  }

  /// Makes queue 0 and asks the device for its serial (GET_ID, §5.2.6).
  func start() {
    let q: BlockQueue
    do throws(VirtioError) {
      q = try makeQueueLocked(0)
    } catch {
      logger.warning("could not make queue 0 at open", metadata: ["reason": "\(error.message)"])
      return
    }
    var queue = q
    var serial: String? = nil
    if let region = try? session.transport.dma.allocate(byteCount: 64, alignment: 64) {
      serial = Self.readSerial(&queue, into: region, timeoutMilliseconds: options.setupTimeoutMilliseconds)
    }
    first = consume queue
    lock.withLock { currentInfo = describe(serial: serial) }
  }

  func makeQueue(_ index: Int) throws(VirtioError) -> BlockQueue {
    try lock.withLock { () throws(VirtioError) -> BlockQueue in
      if index == 0, let q = first.take() { return q }
      return try makeQueueLocked(index)
    }
  }

  private func makeQueueLocked(_ index: Int) throws(VirtioError) -> BlockQueue {
    guard index >= 0, index < session.queueCount else {
      throw VirtioError(.invalidArgument,
        "queue \(index): \(target) has \(session.queueCount) request queue(s) set up (num_queues with VIRTIO_BLK_F_MQ; qemu-storage-daemon: num-queues=N)")
    }
    guard !taken[index], session.queues.contains(index) else {
      throw VirtioError(.deviceBusy, "queue \(index) of \(target) was already handed out; each thread makes its own")
    }
    taken[index] = true
    let doorbell = session.transport.doorbell(queue: index)
    // A queue sleeps only on an interrupt no other queue shares.
    let fd = options.interrupts ? session.transport.ownInterruptEventFD(queue: index, among: session.queueCount) ?? -1 : -1
    let removal = session.transport.removalEventFD ?? -1
    let q = session.takeQueue(index)
    do throws(VirtioError) {
      let requests = try BlockRequestQueue(
        queue: q, config: config, doorbell: doorbell, memory: &session.transport.dma, maxTransferBytes: options.maxTransferBytes)
      return BlockQueue(
        virtio: requests, eventFD: fd, removalFD: removal, geometry: geometry, index: index, owner: self, recovery: self,
        resubmit: options.inFlightAfterRecovery == .resubmit, resetWhenBroken: options.resetBrokenQueues)
    } catch {
      throw error
    }
  }

  func makeBufferPool(count: Int, bufferSize: Int) throws(VirtioError) -> BlockBufferPool {
    let size = try BlockBufferPool.checkedBufferSize(count: count, bufferSize: bufferSize)
    return try lock.withLock { () throws(VirtioError) -> BlockBufferPool in
      do throws(VirtioError) {
        let region = try session.transport.dma.allocate(byteCount: size * count, alignment: 4096)
        return BlockBufferPool(region: region, bufferSize: size, count: count, owner: self)
      } catch {
        var e = error
        e.message = "\(target): no device memory for a pool of \(count) × \(size) bytes: \(error.message)"
        throw e
      }
    }
  }

  /// §4.1.5.1.2: the configuration-change interrupt fired (or, without one,
  /// on every call) — re-read the config (§2.5.1, consistently) and publish a
  /// new capacity to the queues.
  func refreshGeometry() -> BlockDeviceInfo? {
    lock.withLock { () -> BlockDeviceInfo? in
      if let fd = session.transport.configInterruptEventFD {
        // With a config interrupt, only it says the config changed.
        guard Poll.readable(fd, timeoutMilliseconds: 0) == 1 else { return nil }
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

  func interruptCPU(queue index: Int) -> Int? { lock.withLock { session.transport.interruptCPU(queue: index) } }

  func checkRemoved() -> Bool {
    lock.withLock { () -> Bool in
      if geometry.isRemoved { return true }
      guard session.transport.deviceRemoved() else { return false }
      // Queues first (they stop at their next empty poll), then the device goes.
      geometry.removed.store(true, ordering: .releasing)
      session.transport.releaseRemovedDevice()
      logger.warning("the device was removed: its queues stopped, requests in flight failed, the device was released")
      return true
    }
  }

  /// GET_ID (§5.2.6) on a fresh queue, polled up to `timeoutMilliseconds`: the
  /// serial as printable text, or nil when the device has none or fails.
  /// `region` (64 bytes of device-reachable memory) receives the reply.
  static func readSerial(_ queue: inout BlockQueue, into region: DMARegion, timeoutMilliseconds: Int) -> String? {
    let b = BlockBuffer(pointer: region.pointer, deviceAddress: region.iova, capacity: 64, index: 0)
    guard queue.submit(BlockRequest(op: .getID, offset: 0, length: 20, buffer: b, tag: 0)) == .queued else { return nil }
    queue.kick()
    let deadline = monotonicNanoseconds() &+ UInt64(timeoutMilliseconds) &* 1_000_000
    while monotonicNanoseconds() < deadline && queue.brokenReason == nil {
      if let c = queue.poll() {
        guard c.status == .ok else { return nil }
        // The device-written bytes are only ever read as text, up to the first NUL.
        let raw = UnsafeRawBufferPointer(start: region.pointer, count: 20)
        let bytes = raw.prefix { $0 != 0 }.map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: "?") }
        return String(decoding: bytes, as: UTF8.self)
      }
      sched_yield()
    }
    // Still in flight: its completion would reach the queue's user as one of
    // theirs (tag 0). A device that does not answer GET_ID in the set-up time
    // is not answering: the queue breaks with that reason instead.
    if queue.brokenReason == nil { queue.markStalled() }
    return nil
  }
}

extension BlockDevice {
  /// Opens the virtio-blk device behind `transport` (just opened: VFIO,
  /// vhost-user, or a simulated device in tests): §3.1.1 with the virtio-blk
  /// policy (§5.2.3), then the queues in the negotiated layout — the one
  /// place split and packed part ways — and GET_ID.
  public static func open<T: SessionTransport & ~Copyable>(
    transport: consuming T, options: BlockOpenOptions = BlockOpenOptions(), logger: Logger = Logger(label: "blockio")
  ) throws(VirtioError) -> BlockDevice {
    do throws(VirtioError) {
      return BlockDevice(driver: try openVirtio(transport, options: options, logger: logger))
    } catch {
      throw error
    }
  }

  static func openVirtio<T: SessionTransport & ~Copyable>(_ transport: consuming T, options: BlockOpenOptions, logger: Logger)
    throws(VirtioError) -> any BlockDriver
  {
    var t = transport
    guard t.deviceType == .block else {
      throw VirtioError(.invalidArgument, "\(t.target) is a \(t.deviceType), not virtio-blk; give a block device")
    }
    var plan = SessionPlan<T>(policy: BlockFeaturePolicy.policy)
    plan.maxQueueSize = max(3, min(options.queueDepth, 32768))
    plan.maxIndirect = options.maxIndirect
    plan.interrupts = options.interrupts
    let wanted = options.queues
    // §5.2.2: num_queues request queues with VIRTIO_BLK_F_MQ, else one.
    plan.queueCount = { f, t in
      let n = f.contains(bit: BlockFeature.mq) ? max(1, min(t.queueCount, Int(t.readConfig16(VirtioBlkConfig.Offset.num_queues)))) : 1
      return min(n, max(1, wanted ?? n))
    }
    let features = try VirtioDevice.negotiate(&t, plan: plan)
    let config = try BlockConfig(reading: t, features: features)
    if features.contains(bit: VirtioFeature.ringPacked) {
      return driver(try VirtioDevice.setUp(PackedVirtqueue.self, transport: t, features: features, plan: plan), config, options, logger)
    } else {
      return driver(try VirtioDevice.setUp(SplitVirtqueue.self, transport: t, features: features, plan: plan), config, options, logger)
    }
  }

  private static func driver<T: SessionTransport & ~Copyable, Q: BlockIOLayout & ~Copyable>(
    _ session: consuming VirtioSession<T, Q>, _ config: BlockConfig, _ options: BlockOpenOptions, _ logger: Logger
  ) -> any BlockDriver {
    let driver = VirtioBlockDriver(session: session, config: config, options: options, logger: logger)
    driver.start()
    return driver
  }
}
