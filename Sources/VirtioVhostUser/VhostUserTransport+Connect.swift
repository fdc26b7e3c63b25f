import Logging
import VirtioCore
import VirtioOS
import VirtioSpec

extension VhostUserTransport {
  /// Opens a vhost-user backend for a `deviceType` device: shared memory,
  /// eventfds, the connection (retrying until `connectTimeoutMilliseconds`
  /// while the backend starts), then the handshake — GET_FEATURES,
  /// GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_OWNER, GET_CONFIG (blk).
  /// The device is left as after a reset; `DeviceInit.begin` negotiates.
  /// With `sharing`, the backend is given the memory of another transport
  /// (`memorySpace`), so buffers move between the two without a copy.
  ///
  /// Every failure is logged at error level and thrown as a `VirtioError`
  /// whose message says what to do.
  public static func open(
    _ endpoint: VhostUserEndpoint, deviceType: DeviceType, options: VhostUserOptions = VhostUserOptions(),
    logger base: Logger = Logger(label: "virtio.vhost-user"), sharing shared: SharedMemorySpace? = nil
  ) throws(VirtioError) -> VhostUserTransport {
    var logger = base
    logger[metadataKey: "vhost"] = "\(endpoint)"
    guard deviceType == .net || deviceType == .block else {
      throw VirtioError(.invalidArgument, "the vhost-user transport drives virtio-net and virtio-blk backends, not \(deviceType)")
    }
    let space: SharedMemorySpace
    if let shared {
      space = shared
    } else {
      space = SharedMemorySpace(arena: try SharedMemoryArena(byteCount: options.memoryBytes, pages: options.pages, logger: logger))
    }
    space.members.append(endpoint)
    let channel = VhostUserChannel(endpoint: endpoint, logger: logger, replyTimeoutMilliseconds: options.replyTimeoutMilliseconds)
    try channel.connect(timeoutMilliseconds: options.connectTimeoutMilliseconds)
    let state = VhostDeviceState(queueCount: 0)
    try handshake(channel, state, deviceType: deviceType, options: options, logger: logger)
    let queues = exposedQueueCount(state, deviceType: deviceType, options: options)
    guard queues >= 1 else {
      throw VirtioError(.queueSetup, "\(endpoint) offers no queues (GET_QUEUE_NUM 0)")
    }
    state.queues = Array(repeating: VhostQueueState(), count: queues)
    let notifiers = try QueueNotifiers(queues: queues)
    logger.info(
      "opened",
      metadata: [
        "device": "\(deviceType)", "queues": "\(queues)", "protocol": "\(VhostUserProtocolFeature.names(state.protocolFeatures).joined(separator: ","))",
      ])
    return VhostUserTransport(
      notifiers: notifiers, space: space, channel: channel, state: state, deviceType: deviceType, endpoint: endpoint, options: options,
      logger: logger, queueCount: queues)
  }

  /// Net: 2 × queue pairs (no control queue: vhost-user backends do not serve
  /// one; QEMU and DPDK's virtio-user serve it in the frontend). Blk: the
  /// backend's queue count.
  static func exposedQueueCount(_ state: VhostDeviceState, deviceType: DeviceType, options: VhostUserOptions) -> Int {
    switch deviceType {
    case .net:
      // DPDK answers GET_QUEUE_NUM with queue pairs (its `queues=` devarg).
      let pairs = max(1, min(options.queuePairs, state.backendQueueNum ?? 1))
      return 2 * pairs
    default:
      let fromConfig =
        state.config.count >= VirtioBlkConfig.Offset.num_queues + 2
        ? Int(state.config[VirtioBlkConfig.Offset.num_queues]) | Int(state.config[VirtioBlkConfig.Offset.num_queues + 1]) << 8 : 0
      return max(1, min(state.backendQueueNum ?? 1, fromConfig > 0 ? fromConfig : 1))
    }
  }

  /// Features this transport can pass on, whatever the backend offers:
  /// not ACCESS_PLATFORM (no IOTLB here: addresses are our virtual addresses),
  /// not NOTIFICATION_DATA (a kick eventfd carries no value), not RING_RESET;
  /// for net nothing that needs a control queue (the backend does not serve one).
  static let withheld = FeatureSet(bits: [
    VirtioFeature.accessPlatform, VirtioFeature.notificationData, VirtioFeature.ringReset, VirtioFeature.notifConfigData,
    VirtioFeature.adminVQ, VirtioFeature.srIOV,
  ])
  static let withheldNet = FeatureSet(bits: [
    NetFeature.ctrlVQ, NetFeature.ctrlRx, NetFeature.ctrlVLAN, NetFeature.ctrlRxExtra, NetFeature.guestAnnounce, NetFeature.mq,
    NetFeature.ctrlMACAddr, NetFeature.ctrlGuestOffloads, NetFeature.rss, NetFeature.hashReport, NetFeature.vqNotfCoal,
    NetFeature.notfCoal, NetFeature.deviceStats,
  ])

  /// The handshake on a fresh connection (vhost-user.rst "Communication";
  /// the order QEMU's vhost_user_backend_init uses).
  package static func handshake(
    _ channel: VhostUserChannel, _ state: VhostDeviceState, deviceType: DeviceType, options: VhostUserOptions, logger: Logger
  ) throws(VirtioError) {
    let features = VhostUserWire.get64(try answer(channel.request(.GET_FEATURES, reply: true), 8, .GET_FEATURES, channel), 0)
    state.backendFeatures = features
    state.protocolFeatures = 0
    state.backendQueueNum = nil
    channel.replyAck = false
    if features & (1 << UInt64(VhostUserFeature.protocolFeatures)) != 0 {
      let offered = VhostUserWire.get64(
        try answer(channel.request(.GET_PROTOCOL_FEATURES, reply: true), 8, .GET_PROTOCOL_FEATURES, channel), 0)
      var wanted = options.protocolFeatures
      if deviceType == .net { wanted &= ~(1 << UInt64(VhostUserProtocolFeature.config)) }
      let agreed = offered & wanted
      try channel.request(.SET_PROTOCOL_FEATURES, payload: VhostUserWire.u64(agreed), what: VhostUserProtocolFeature.names(agreed).joined(separator: ","))
      state.protocolFeatures = agreed
      channel.replyAck = agreed & (1 << UInt64(VhostUserProtocolFeature.replyAck)) != 0
      logger.info(
        "protocol features",
        metadata: [
          "offered": "\(VhostUserProtocolFeature.names(offered).joined(separator: ","))",
          "agreed": "\(VhostUserProtocolFeature.names(agreed).joined(separator: ","))",
        ])
      if state.has(VhostUserProtocolFeature.mq) {
        let n = VhostUserWire.get64(try answer(channel.request(.GET_QUEUE_NUM, reply: true), 8, .GET_QUEUE_NUM, channel), 0)
        state.backendQueueNum = Int(min(n, 1024))
      }
    }
    try channel.request(.SET_OWNER)
    // What the driver is offered: the backend's virtio bits, less what this transport cannot carry.
    var offer = FeatureSet(low: features)
    offer.remove(FeatureSet(bits: [VhostUserFeature.protocolFeatures, VhostUserFeature.logAll]))
    offer.remove(withheld)
    switch deviceType {
    case .net:
      offer.remove(withheldNet)
      // The emulated config space has a MAC and a link status.
      offer.formUnion(FeatureSet(bits: [NetFeature.mac, NetFeature.status]))
      state.config = netConfig(options: options, pairs: max(1, min(options.queuePairs, state.backendQueueNum ?? 1)))
    default:
      guard state.has(VhostUserProtocolFeature.config) else {
        throw VirtioError(
          .missingFeatures,
          "the vhost-user-blk backend at \(channel.endpoint.path) does not offer PROTOCOL_F_CONFIG, so its capacity cannot be read; use a backend that does (qemu-storage-daemon does)")
      }
      // virtio_blk_config up to write_zeroes_may_unmap and its padding (60 bytes):
      // what QEMU 7.2's vhost-user-blk export answers.
      let size = 60
      let reply = try channel.request(.GET_CONFIG, payload: VhostUserWire.configRequest(offset: 0, size: UInt32(size)), reply: true)
      guard reply.count == 12 + size, VhostUserWire.get32(reply, 4) == UInt32(size) else {
        throw VirtioError(
          .transport,
          "the vhost-user-blk backend at \(channel.endpoint.path) answered GET_CONFIG with \(reply.count) bytes (an error, or a config smaller than \(size) bytes); check the backend's log")
      }
      state.config = Array(reply[12...])
    }
    state.offered = offer
    state.configGeneration &+= 1
    logger.info(
      "backend features",
      metadata: ["raw": "0x\(String(features, radix: 16))", "offered": "\(offer.names(device: deviceType).joined(separator: ","))"])
  }

  static func answer(_ payload: [UInt8], _ size: Int, _ req: VhostUserRequest, _ channel: VhostUserChannel) throws(VirtioError) -> [UInt8] {
    guard payload.count == size else {
      channel.disconnect()
      throw VirtioError(.transport, "the vhost-user backend at \(channel.endpoint.path) answered \(req) with \(payload.count) bytes, not \(size); check its version")
    }
    return payload
  }

  /// virtio_net_config as this frontend emulates it (§5.1.4): mac, status
  /// (LINK_UP), max_virtqueue_pairs, mtu 1500.
  static func netConfig(options: VhostUserOptions, pairs: Int) -> [UInt8] {
    var c = [UInt8](repeating: 0, count: 12)
    for (i, b) in options.mac.prefix(6).enumerated() { c[VirtioNetConfig.Offset.mac + i] = b }
    c[VirtioNetConfig.Offset.status] = UInt8(NetStatus.linkUp)
    c[VirtioNetConfig.Offset.max_virtqueue_pairs] = UInt8(truncatingIfNeeded: pairs)
    c[VirtioNetConfig.Offset.max_virtqueue_pairs + 1] = UInt8(truncatingIfNeeded: pairs >> 8)
    c[VirtioNetConfig.Offset.mtu] = UInt8(1500 & 0xFF)
    c[VirtioNetConfig.Offset.mtu + 1] = UInt8(1500 >> 8)
    return c
  }

  // MARK: status transitions

  /// FEATURES_OK: the accepted set must be part of the offer; SET_FEATURES
  /// (with PROTOCOL_FEATURES when the backend has it), then SET_MEM_TABLE.
  func applyFeatures() throws(VirtioError) {
    let accepted = state.driverFeatures
    let extra = accepted.subtracting(state.offered)
    guard extra.isEmpty else {
      throw VirtioError(.negotiationFailed, "the driver accepted \(extra.names(device: deviceType).joined(separator: ",")), which \(endpoint) did not offer")
    }
    guard accepted.high == 0 else {
      throw VirtioError(.negotiationFailed, "vhost-user carries 64 feature bits; the driver accepted bits above 63")
    }
    var wire = accepted.low
    if state.backendFeatures & (1 << UInt64(VhostUserFeature.protocolFeatures)) != 0 {
      wire |= 1 << UInt64(VhostUserFeature.protocolFeatures)
    }
    // The emulated net bits are the frontend's, not the backend's.
    if deviceType == .net {
      for bit in [NetFeature.mac, NetFeature.status] where state.backendFeatures & (1 << UInt64(bit)) == 0 {
        wire &= ~(1 << UInt64(bit))
      }
    }
    try channel.request(.SET_FEATURES, payload: VhostUserWire.u64(wire), what: "0x\(String(wire, radix: 16))")
    try sendMemoryTable()
  }

  func sendMemoryTable() throws(VirtioError) {
    let region = dma.region
    try channel.request(
      .SET_MEM_TABLE, payload: VhostUserWire.memoryTable([region]), fds: [dma.fd.raw],
      what: "1 region, \(region.memory_size >> 20) MiB at 0x\(String(region.userspace_addr, radix: 16))")
  }

  /// SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR for queue `index`.
  func sendRingSetup(_ index: Int) throws(VirtioError) {
    let q = state.queues[index]
    guard let a = q.addresses else { return }
    let i = UInt32(index)
    try channel.request(.SET_VRING_NUM, payload: VhostUserWire.vringState(index: i, num: UInt32(q.size)), what: "queue \(index) size \(q.size)")
    let base = VhostUserVringBase.encode(q.base, packed: state.packed)
    try channel.request(.SET_VRING_BASE, payload: VhostUserWire.vringState(index: i, num: base), what: "queue \(index) base \(q.base)")
    // vhost_vring_addr: used (device area) before avail (driver area).
    try channel.request(
      .SET_VRING_ADDR, payload: VhostUserWire.vringAddr(index: i, flags: 0, desc: a.descIOVA, used: a.deviceIOVA, avail: a.driverIOVA),
      what: "queue \(index)")
    logger.debug(
      "ring set up",
      metadata: [
        "queue": "\(index)", "size": "\(q.size)", "base": "\(q.base)", "desc": "0x\(String(a.descIOVA, radix: 16))",
        "driver": "0x\(String(a.driverIOVA, radix: 16))", "device": "0x\(String(a.deviceIOVA, radix: 16))",
      ])
  }

  /// SET_VRING_CALL then SET_VRING_KICK: the backend starts the ring.
  func startRing(_ index: Int) throws(VirtioError) {
    let i = UInt64(index)
    try channel.request(.SET_VRING_CALL, payload: VhostUserWire.u64(i), fds: [notifiers.call[index]], what: "queue \(index)")
    try channel.request(.SET_VRING_KICK, payload: VhostUserWire.u64(i), fds: [notifiers.kick[index]], what: "queue \(index)")
    state.queues[index].started = true
  }

  /// SET_VRING_ENABLE (only with VHOST_USER_F_PROTOCOL_FEATURES: without it a
  /// started ring is enabled already).
  func enableRing(_ index: Int, _ on: Bool) throws(VirtioError) {
    guard state.backendFeatures & (1 << UInt64(VhostUserFeature.protocolFeatures)) != 0 else { return }
    try channel.request(.SET_VRING_ENABLE, payload: VhostUserWire.vringState(index: UInt32(index), num: on ? 1 : 0), what: "queue \(index) \(on ? "on" : "off")")
  }

  func enableStartedRings() throws(VirtioError) {
    for i in state.queues.indices where state.queues[i].started { try enableRing(i, true) }
  }

  /// GET_VRING_BASE on every started ring: the backend stops it and says
  /// where it stopped. Errors only logged: used on teardown and reset.
  func stopRings(reason: String) {
    for i in state.queues.indices where state.queues[i].started {
      state.queues[i].started = false
      guard channel.isConnected else { continue }
      do throws(VirtioError) {
        let r = try channel.request(.GET_VRING_BASE, payload: VhostUserWire.vringState(index: UInt32(i), num: 0), reply: true)
        if r.count == 8 {
          let stoppedAt = VhostUserVringBase.decode(VhostUserWire.get32(r, 4), packed: state.packed)
          logger.debug("ring stopped", metadata: ["queue": "\(i)", "reason": "\(reason)", "backend_base": "\(stoppedAt)"])
        }
      } catch {
        logger.warning("GET_VRING_BASE failed", metadata: ["queue": "\(i)", "reason": "\(error.message)"])
      }
    }
  }

  // MARK: reconnect

  /// Re-establishes the device after the backend restarted: connects again
  /// (client: retries until the new backend listens; server: accepts its new
  /// connection), repeats the handshake, checks the backend still offers
  /// every feature the driver accepted, and restarts every ring the driver had
  /// started from `resume[i]` (default: where the ring began) — features,
  /// memory table, ring setup, kick/call, enable, DRIVER_OK — then kicks each
  /// ring once, since buffers are already waiting.
  ///
  /// `resume[i]` is queue i's `deviceResumePosition`, taken after its used
  /// buffers were drained: the new backend resumes where the old one stopped
  /// and processes what was still in flight (vhost-user.rst "Inflight I/O
  /// tracking": in-order backends need nothing more).
  public mutating func reconnect(resume: [Int: RingPosition], timeoutMilliseconds: Int? = nil) throws(VirtioError) {
    let wasLive = state.status
    let accepted = state.driverFeatures
    let ringsToRestart =
      state.ringsAwaitingRestart
      ?? state.queues.indices.filter { state.queues[$0].addresses != nil && (state.queues[$0].started || wasLive.contains(.driverOK)) }
    state.ringsAwaitingRestart = ringsToRestart
    for i in state.queues.indices { state.queues[i].started = false }
    channel.disconnect()
    let started = monotonicMilliseconds()
    do throws(VirtioError) {
      try channel.connect(timeoutMilliseconds: timeoutMilliseconds ?? options.connectTimeoutMilliseconds, logFailure: false)
      try Self.handshake(channel, state, deviceType: deviceType, options: options, logger: logger)
      let missing = accepted.subtracting(state.offered)
      guard missing.isEmpty else {
        throw VirtioError(
          .missingFeatures,
          "the restarted backend at \(endpoint.path) no longer offers \(missing.names(device: deviceType).joined(separator: ",")), which the driver uses; restart it with the same options as before")
      }
      state.driverFeatures = accepted
      state.status = DeviceStatus(rawValue: 0)
      let ack = DeviceStatus.acknowledge.union(.driver)
      writeStatus(ack)
      writeStatus(ack.union(.featuresOK))
      guard state.status.contains(.featuresOK) else {
        throw state.lastError ?? VirtioError(.negotiationFailed, "the restarted backend refused the features it was driven with")
      }
      for i in ringsToRestart {
        state.queues[i].base = resume[i] ?? .start
        try sendRingSetup(i)
        try startRing(i)
      }
      writeStatus(ack.union(.featuresOK).union(.driverOK))
      guard state.status.contains(.driverOK) else {
        throw state.lastError ?? VirtioError(.deviceFailed, "the restarted backend did not take DRIVER_OK")
      }
      for i in ringsToRestart { notifiers.ring(i) }
      state.ringsAwaitingRestart = nil
      let failed = state.reconnectFailures
      state.reconnectFailures = 0
      logger.info(
        "reconnected",
        metadata: [
          "connection": "\(channel.connections)", "rings": "\(ringsToRestart.count)", "ms": "\(monotonicMilliseconds() - started)",
          "failed_attempts": "\(failed)",
          "resume": "\(ringsToRestart.map { "q\($0):\(state.queues[$0].base)" }.joined(separator: " "))",
        ])
    } catch {
      // An outage can last long and callers retry each poll: log the 1st,
      // 2nd, 4th, 8th… failure of a run (each says how many so far).
      state.reconnectFailures += 1
      let n = state.reconnectFailures
      logger.log(
        level: n & (n - 1) == 0 ? .warning : .debug, "reconnect failed",
        metadata: ["step": "reconnect", "reason": "\(error.message)", "failed_attempts": "\(n)"])
      channel.disconnect()
      throw error
    }
  }
}
