import Logging
import VirtioCore
import VirtioSpec

/// Options for opening a vhost-user backend.
public struct VhostUserOptions: Sendable {
  /// Bytes of shared memory (rings + buffers); rounded up to 2 MiB.
  public var memoryBytes: Int = 64 << 20
  public var pages: SharedMemoryPages = .hugePreferred
  /// The largest ring the transport reports (vhost-user has no queue_size
  /// register; QEMU's limit is 1024, libvhost-user's too).
  public var maxQueueSize: Int = 1024
  /// How long to wait for the backend's socket at open and on reconnect.
  public var connectTimeoutMilliseconds: Int = 5000
  /// How long one reply may take.
  public var replyTimeoutMilliseconds: Int = 5000
  /// virtio-net: the MAC the emulated config space reports (vhost-user net
  /// backends have no config space of their own; QEMU emulates it too).
  public var mac: [UInt8] = [0x02, 0x76, 0x69, 0x6F, 0x00, 0x01]
  /// virtio-net: queue pairs to expose (at most what GET_QUEUE_NUM allows).
  public var queuePairs: Int = 1
  /// Protocol features this frontend asks for when the backend offers them.
  public var protocolFeatures: UInt64 =
    1 << UInt64(VhostUserProtocolFeature.mq) | 1 << UInt64(VhostUserProtocolFeature.replyAck)
    | 1 << UInt64(VhostUserProtocolFeature.config) | 1 << UInt64(VhostUserProtocolFeature.status)

  public init() {}
}

/// Per-queue state the transport replays on every (re)start of a ring.
struct VhostQueueState {
  var size = 0
  var addresses: QueueAddresses? = nil
  /// SET_VRING_KICK/CALL sent: the backend may process the ring.
  var started = false
  /// Where the backend starts (SET_VRING_BASE): a fresh ring's start, or a
  /// resume position after a backend restart.
  var base = RingPosition.start
}

/// Device state the frontend emulates, because vhost-user has no device
/// status or feature registers of its own (STATUS protocol feature aside).
/// Control path only.
package final class VhostDeviceState {
  var status = DeviceStatus(rawValue: 0)
  /// GET_FEATURES as the backend answered it (raw, including bit 30).
  var backendFeatures: UInt64 = 0
  /// What the transport offers the driver (see `offer`).
  var offered = FeatureSet()
  var driverFeatures = FeatureSet()
  /// Protocol features both sides agreed on.
  var protocolFeatures: UInt64 = 0
  /// GET_QUEUE_NUM, when the backend has PROTOCOL_F_MQ.
  var backendQueueNum: Int? = nil
  package var config: [UInt8] = []
  var configGeneration: UInt8 = 0
  var queues: [VhostQueueState]
  /// The last reason a status write did not stick.
  var lastError: VirtioError? = nil
  /// Rings a failed reconnect still owes a restart: a failed attempt has
  /// already cleared `status` and `started`, so the next attempt must not
  /// re-derive the list from them.
  var ringsAwaitingRestart: [Int]? = nil
  /// Reconnect attempts that failed since the backend was last reached: an
  /// outage is logged at its 1st, 2nd, 4th, 8th… failure, not once a poll.
  var reconnectFailures = 0

  package init(queueCount: Int) { queues = Array(repeating: VhostQueueState(), count: queueCount) }

  func has(_ protocolBit: Int) -> Bool { protocolFeatures & (1 << UInt64(protocolBit)) != 0 }
  var packed: Bool { driverFeatures.contains(bit: VirtioFeature.ringPacked) }
}

/// The vhost-user frontend: VirtioCore's `Transport` over a unix socket to a
/// backend process (DPDK's vhost library, qemu-storage-daemon) that plays the
/// device. Rings and buffers live in a memfd both processes map; kicks and
/// interrupts are eventfds; device status, feature negotiation and (for net)
/// the config space are emulated here, since vhost-user has no registers:
///
///   status ← FEATURES_OK   SET_FEATURES (+ SET_MEM_TABLE); sticks only when
///                          the backend accepts (REPLY_ACK) and the set is a
///                          subset of the offer
///   configureQueue         SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR
///   enableQueue            SET_VRING_CALL, SET_VRING_KICK (the ring starts)
///   status ← DRIVER_OK     SET_VRING_ENABLE 1 on every started ring (+ SET_STATUS)
///   reset / close          GET_VRING_BASE on every started ring (stops it)
///
/// It owns the socket, the shared memory and the eventfds, releasing each once.
///
/// Reference: QEMU docs/interop/vhost-user.rst; QEMU hw/virtio/vhost-user.c
/// and DPDK drivers/net/virtio/virtio_user (other frontends).
public struct VhostUserTransport: ~Copyable, Transport {
  // Release order: deinit stops the rings, then the stored properties go in
  // declaration order — eventfds, shared memory (when no other transport
  // shares it), the connection.
  let notifiers: QueueNotifiers
  let space: SharedMemorySpace
  let channel: VhostUserChannel
  let state: VhostDeviceState

  public let deviceType: DeviceType
  public let endpoint: VhostUserEndpoint
  public let options: VhostUserOptions
  public let logger: Logger
  /// Queues the transport exposes (net: 2 × queue pairs; blk: num_queues).
  public let queueCount: Int

  deinit {
    // Stop the backend's rings before the memory they live in goes away.
    stopRings(reason: "close")
    logger.info("closed", metadata: ["shared_bytes": "\(dma.byteCount)", "used_bytes": "\(dma.usedBytes)"])
  }

  /// Shared memory: rings and buffers come from here (the name matches VFIO's
  /// `dma`). Shared with every transport opened in the same `memorySpace`.
  /// Control path only.
  public var dma: SharedMemoryArena {
    _read { yield space.arena }
    _modify { yield &space.arena }
  }

  /// The shared memory this transport's backend maps; pass it to
  /// `open(_:sharing:)` to open another backend over the same memory.
  public var memorySpace: SharedMemorySpace { space }

  /// Stops the rings and closes the connection (same as dropping the value).
  public consuming func close() {}

  // MARK: Transport — status and features

  public func readStatus() -> DeviceStatus {
    var s = state.status
    // No backend, no device: the driver must set it up again (§2.1.2).
    if !channel.isConnected && s.rawValue != 0 { s.insert(.deviceNeedsReset) }
    return s
  }

  public func writeStatus(_ status: DeviceStatus) {
    let old = state.status
    var new = status
    if status.rawValue == 0 {
      stopRings(reason: "status 0")
      state.status = new
      return
    }
    if !take(.featuresOK, from: old, to: status, step: "features", "FEATURES_OK refused", { () throws(VirtioError) in try applyFeatures() }) {
      new.remove(.featuresOK)
    }
    if !take(.driverOK, from: old, to: status, step: "driver-ok", "DRIVER_OK failed", { () throws(VirtioError) in try enableStartedRings() }) {
      new.remove(.driverOK)
      new.insert(.deviceNeedsReset)
    }
    if status.contains(.failed) && !old.contains(.failed) { logger.warning("driver set FAILED") }
    if state.has(VhostUserProtocolFeature.status) && channel.isConnected {
      _ = try? channel.request(.SET_STATUS, payload: VhostUserWire.u64(UInt64(new.rawValue)), what: "status \(new)")
    }
    state.status = new
    logger.debug("device_status ←", metadata: ["status": "\(new)"])
  }

  /// Carries out what a status bit the driver has just set asks of the
  /// backend (§3.1.1); false when that failed: the error is kept for the
  /// session (`lastError`) and logged, and the bit must not stick.
  func take(
    _ bit: DeviceStatus, from old: DeviceStatus, to status: DeviceStatus, step: String, _ what: String, _ action: () throws(VirtioError) -> Void
  ) -> Bool {
    guard status.contains(bit) && !old.contains(bit) else { return true }
    do throws(VirtioError) {
      try action()
      return true
    } catch {
      state.lastError = error
      logger.error("\(what)", metadata: ["step": "\(step)", "reason": "\(error.message)"])
      return false
    }
  }

  /// vhost-user has no reset register: stopping every started ring
  /// (GET_VRING_BASE) and forgetting the negotiated state is the reset.
  public func reset() throws(VirtioError) {
    stopRings(reason: "reset")
    state.status = DeviceStatus(rawValue: 0)
    state.driverFeatures = FeatureSet()
    for i in state.queues.indices { state.queues[i] = VhostQueueState() }
    if !channel.isConnected {
      throw VirtioError(.transport, "no vhost-user backend is connected to \(endpoint.path); restart it and reconnect")
    }
  }

  public func readDeviceFeatures(word index: Int) -> UInt32 {
    guard index >= 0, index < FeatureSet.wordCount else { return 0 }
    return state.offered.word(index)
  }

  public func writeDriverFeatures(word index: Int, _ value: UInt32) {
    guard index >= 0, index < FeatureSet.wordCount else { return }
    state.driverFeatures.setWord(index, value)
  }

  /// The feature set the driver last wrote.
  public var driverFeatures: FeatureSet { state.driverFeatures }
  /// Protocol features agreed with the backend.
  public var protocolFeatures: UInt64 { state.protocolFeatures }
  /// GET_FEATURES as the backend sent it.
  public var backendFeatures: UInt64 { state.backendFeatures }
  /// The reason the last FEATURES_OK or DRIVER_OK did not stick, if any.
  public var lastError: VirtioError? { state.lastError }

  // MARK: Transport — queues

  public func maxQueueSize(_ index: Int) -> Int {
    index >= 0 && index < queueCount ? options.maxQueueSize : 0
  }

  public mutating func configureQueue(_ index: Int, _ a: QueueAddresses) throws(VirtioError) {
    guard index >= 0, index < queueCount else { throw queueError(index, "the device has \(queueCount) queues") }
    guard !state.queues[index].started else { throw queueError(index, "it is already started; reset the device first") }
    guard a.size >= 1, a.size <= options.maxQueueSize else {
      throw queueError(index, "size \(a.size) is outside 1...\(options.maxQueueSize)")
    }
    // The backend can only translate addresses inside the shared region.
    let packed = state.packed
    let descBytes = 16 * a.size
    let driverBytes = packed ? 4 : 6 + 2 * a.size
    let deviceBytes = packed ? 4 : 6 + 8 * a.size
    for (what, addr, len) in [("descriptor area", a.descIOVA, descBytes), ("driver area", a.driverIOVA, driverBytes), ("device area", a.deviceIOVA, deviceBytes)]
    where !dma.contains(address: addr, length: len) {
      throw queueError(index, "its \(what) at 0x\(String(addr, radix: 16)) is not in the shared memory; allocate rings from the transport's `dma`")
    }
    state.queues[index].size = a.size
    state.queues[index].addresses = a
    try sendRingSetup(index)
  }

  public mutating func enableQueue(_ index: Int) throws(VirtioError) {
    guard index >= 0, index < queueCount, state.queues[index].addresses != nil else {
      throw queueError(index, "enable before configure")
    }
    try startRing(index)
    // A queue started after DRIVER_OK is enabled at once.
    if state.status.contains(.driverOK) { try enableRing(index, true) }
  }

  /// Rings queue `index`'s kick eventfd. Hot path: one write(2), no allocation.
  @inlinable public func notify(queue index: Int, value: UInt32) {
    doorbell(queue: index).ring(value)
  }

  /// The kick eventfd as VirtioCore's `Doorbell` (a C function and the
  /// descriptor), for a queue owner on its own thread. Valid while this
  /// transport lives, across backend reconnects (the eventfd stays the same).
  public func doorbell(queue index: Int) -> Doorbell { notifiers.doorbell(index) }

  /// Waits for queue `index`'s call eventfd (the backend's interrupt).
  public func waitForInterrupt(queue index: Int, timeoutMilliseconds: Int) -> InterruptWait {
    notifiers.wait(queue: index, timeoutMilliseconds: timeoutMilliseconds)
  }

  /// Queue `index`'s call eventfd, for an owner that sleeps on it on its own
  /// thread (read 8 bytes to clear it); the name matches VFIO's. Owned by the
  /// transport: do not close it. Nil for a queue the transport does not have.
  public func interruptEventFD(queue index: Int) -> Int32? {
    index >= 0 && index < notifiers.count ? notifiers.call[index] : nil
  }

  /// Call signals seen so far on queue `index`.
  public func interruptsTaken(queue index: Int) -> UInt64 {
    index >= 0 && index < notifiers.count ? notifiers.signals[index] : 0
  }

  // MARK: Transport — device config

  public func configGeneration() -> UInt8 { state.configGeneration }
  public var configSize: Int { state.config.count }

  public func readConfig8(_ offset: Int) -> UInt8 {
    offset >= 0 && offset < state.config.count ? state.config[offset] : 0
  }
  public func readConfig16(_ offset: Int) -> UInt16 {
    UInt16(readConfig8(offset)) | UInt16(readConfig8(offset + 1)) << 8
  }
  public func readConfig32(_ offset: Int) -> UInt32 {
    UInt32(readConfig16(offset)) | UInt32(readConfig16(offset + 2)) << 16
  }
  /// SET_CONFIG for one byte (blk `writeback`), when the backend has CONFIG.
  public func writeConfig8(_ offset: Int, _ value: UInt8) {
    guard offset >= 0, offset < state.config.count else { return }
    state.config[offset] = value
    guard deviceType != .net, state.has(VhostUserProtocolFeature.config), channel.isConnected else { return }
    var payload: [UInt8] = []
    VhostUserWire.put32(&payload, UInt32(offset))
    VhostUserWire.put32(&payload, 1)
    VhostUserWire.put32(&payload, 0)  // flags 0: a writable field written by the driver
    payload.append(value)
    do throws(VirtioError) {
      try channel.request(.SET_CONFIG, payload: payload, what: "offset \(offset)")
    } catch {
      logger.error("SET_CONFIG failed", metadata: ["offset": "\(offset)", "reason": "\(error.message)"])
    }
  }

  // MARK: connection

  /// True while the backend is connected (as far as the last message knew).
  public var isConnected: Bool { channel.isConnected }

  /// Checks the socket for a hang-up (one poll(2), no wait); a data loop calls
  /// this now and then — when idle, or every few thousand bursts — never per packet.
  public func backendGone() -> Bool {
    if channel.isConnected && channel.peerGone() {
      logger.warning("backend hung up", metadata: ["socket": "\(endpoint.path)"])
      channel.disconnect()
    }
    return !channel.isConnected
  }

  /// Connections made so far (1 after open; each reconnect adds one).
  public var connections: Int { channel.connections }

  func queueError(_ index: Int, _ why: String) -> VirtioError {
    logger.error("queue setup failed", metadata: ["step": "queue-setup", "queue": "\(index)", "reason": "\(why)"])
    return VirtioError(.queueSetup, "\(deviceType) \(endpoint) queue \(index): \(why)")
  }
}
