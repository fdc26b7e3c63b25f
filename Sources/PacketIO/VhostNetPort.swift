import Glibc
import Logging
import VirtioCore
import VirtioNet
import VirtioSpec
import VirtioVhostUser

/// A virtio-net device played by a vhost-user backend (DPDK's vhost behind
/// dpdk-testpmd, OVS-DPDK, ...), after DRIVER_OK, with one ring layout (fixed
/// by negotiation). No control queue: the backend serves none; queue pairs
/// come from VHOST_USER_PROTOCOL_F_MQ and SET_VRING_ENABLE, and the frontend
/// emulates the config space (MAC, link up). Its pairs are taken out one by
/// one by workers; reconnecting after a backend restart stays here (main
/// thread), with the workers' drained ring positions (`ReconnectBoard`).
struct VhostNetPort<Q: ConstructibleVirtqueue & ~Copyable>: ~Copyable {
  var session: VhostUserSession<Q>
  let features: FeatureSet
  let pairs: Int
  let board: ReconnectBoard
  var taken: [Bool]
  var linkUp = true
  /// The backend hung up; waiting for the workers' positions, then for a new backend.
  var reconnecting = false
  var epoch: UInt32 = 0
  var reconnects: UInt64 = 0
  let address: PortAddress
  let logger: Logger
  /// How long one reconnect attempt may wait for the new backend (the main thread's poll loop waits that long).
  static var attemptMilliseconds: Int { 1000 }

  init(session: consuming VhostUserSession<Q>, pairs: Int, address: PortAddress, logger: Logger) {
    self.features = session.features
    self.session = session
    self.pairs = pairs
    self.board = ReconnectBoard(pairs: pairs)
    self.taken = Array(repeating: false, count: pairs)
    self.address = address
    self.logger = logger
  }

  /// Queue pair `q` (receiveq q = 2q, transmitq q = 2q+1, §5.1.2), rung through
  /// its kick eventfds (the same across reconnects).
  mutating func takePair(_ q: Int) -> VhostNetQueue<Q> {
    taken[q] = true
    let rx = session.takeQueue(NetConfig.receiveQueue(pair: q))
    let tx = session.takeQueue(NetConfig.transmitQueue(pair: q))
    let pair = NetQueuePair(
      rx: rx, tx: tx, rxDoorbell: session.transport.doorbell(queue: NetConfig.receiveQueue(pair: q)),
      txDoorbell: session.transport.doorbell(queue: NetConfig.transmitQueue(pair: q)), features: features)
    return VhostNetQueue(pair: pair, control: board.control(pair: q))
  }

  /// The call eventfd of receiveq `q`: its own, never shared.
  func receiveEventFD(_ q: Int) -> Int32 { session.transport.interruptEventFD(queue: NetConfig.receiveQueue(pair: q)) ?? -1 }

  /// Main thread, every poll: a hang-up takes the link down and asks the
  /// workers for their ring positions; once all reported, reconnects (one
  /// attempt per call, at most `attemptMilliseconds`) and brings the link up.
  /// Never reports DEVICE_NEEDS_RESET: a lost backend is waited for.
  mutating func check() -> (linkUp: Bool, needsReset: Bool) {
    if !reconnecting {
      guard session.backendGone() else { return (linkUp, false) }
      linkUp = false
      reconnecting = true
      epoch = board.requestDrain()
      logger.warning(
        "the vhost-user backend hung up: link down; waiting for it to come back at \(session.transport.endpoint.path) (frames sent meanwhile are dropped and counted)",
        metadata: ["port": "\(address)"])
      // Wake workers asleep on their RX call eventfds so they drain and report.
      for q in 0..<pairs where taken[q] {
        var one: UInt64 = 1
        _ = write(receiveEventFD(q), &one, 8)
      }
    }
    var resume: [Int: RingPosition] = [:]
    for q in 0..<pairs where taken[q] {
      guard let (rx, tx) = board.drained(pair: q, epoch: epoch) else { return (linkUp, false) }
      resume[NetConfig.receiveQueue(pair: q)] = rx
      resume[NetConfig.transmitQueue(pair: q)] = tx
    }
    do throws(VirtioError) {
      try session.reconnect(taken: resume, timeoutMilliseconds: Self.attemptMilliseconds)
    } catch {
      // The transport logged why; the next poll tries again.
      return (linkUp, false)
    }
    reconnecting = false
    linkUp = true
    reconnects &+= 1
    logger.warning(
      "reconnected to the restarted vhost-user backend: link up",
      metadata: [
        "port": "\(address)", "connection": "\(session.transport.connections)",
        "resume": "\(resume.sorted { $0.key < $1.key }.map { "q\($0.key):\($0.value)" }.joined(separator: " "))",
      ])
    return (true, false)
  }
}

/// Opening a vhost-user net port: connect, negotiate with the net driver's
/// policy, then the ring layout is chosen — the one place split and packed
/// part ways.
enum VhostNetOpen {
  /// Shared memory a group with vhost-user ports needs, sized before any is
  /// opened (every backend maps it once): each vhost-user port's rings, and
  /// one buffer pool per worker as `PortGroup.poolSize` makes it, for the
  /// largest burst the rings allow.
  static func memoryBytes(for addresses: [PortAddress], options: PortOptions) -> Int {
    if let fixed = options.vhostMemoryBytes { return fixed }
    let size = ringSize(options)
    let vhostPorts = addresses.filter(\.isVhostUser).count
    // Per queue: descriptors, driver and device areas, an 8-entry indirect table per descriptor, alignment.
    let perQueue = size * (16 + 8 + 8 + 8 * 16) + 3 * 4096
    let rings = vhostPorts * 2 * options.queues * perQueue
    // A kernel port's MTU may be up to a jumbo frame: size buffers for it.
    let frame = addresses.allSatisfy(\.isVhostUser) ? PortOptions.frameBytes(mtu: 1500) : PortOptions.maxFrameBytes
    let buffer = max(2048, (PortGroup.headroom + frame + 63) & ~63)
    let burst = min(options.rxDescriptors, options.txDescriptors, 1024)
    let perPool = addresses.count * (options.rxDescriptors + options.txDescriptors + 4 * burst) + 256
    return rings + options.queues * perPool * buffer + (2 << 20)
  }

  /// vhost-user sets every ring to one size: the larger of --rxd/--txd, at most 32768.
  static func ringSize(_ options: PortOptions) -> Int { min(max(options.rxDescriptors, options.txDescriptors), 32768) }

  static func open(
    _ endpoint: VhostUserEndpoint, index: Int, options: PortOptions, memoryBytes: Int, sharing: SharedMemorySpace?, logger base: Logger
  ) throws(VirtioError) -> (PortBackend, PortInfo, SharedMemorySpace) {
    var logger = base
    logger[metadataKey: "port"] = "\(endpoint)"
    let port = PortAddress.vhostUser(endpoint)
    var vhost = VhostUserOptions()
    vhost.memoryBytes = memoryBytes
    vhost.pages = options.vfio.hugePages == .required ? .hugeRequired : options.vfio.hugePages == .disabled ? .small : .hugePreferred
    vhost.maxQueueSize = ringSize(options)
    vhost.queuePairs = options.queues
    // A locally administered MAC per port of the group (the backend has no config space).
    vhost.mac = [0x02, 0x76, 0x69, 0x6F, 0x00, UInt8(truncatingIfNeeded: index + 1)]
    // The net driver's policy, less ACCESS_PLATFORM: addresses here are this
    // process's own (the shared memfd), there is no IOMMU to go through.
    var policy = options.netFeaturePolicy()
    policy.wanted.remove(FeatureSet(bit: VirtioFeature.accessPlatform))
    policy.required.remove(FeatureSet(bit: VirtioFeature.accessPlatform))
    var plan = VhostUserOpenPlan(policy: policy)
    plan.options = vhost
    plan.maxQueueSize = vhost.maxQueueSize
    var t = try VhostUserTransport.open(endpoint, deviceType: .net, options: vhost, logger: logger, sharing: sharing)
    let space = t.memorySpace
    // §5.1.2: 2 × queue pairs, no control queue (vhost-user backends serve none).
    let pairs = t.queueCount / 2
    guard options.queues <= pairs else {
      throw VirtioError(
        .invalidArgument,
        "port \(port): cannot use \(options.queues) queue pairs: the backend offers \(pairs) (VHOST_USER_GET_QUEUE_NUM; DPDK: queues=\(options.queues) in --vdev net_vhost0,...); use --queues \(pairs)")
    }
    let queueCount = 2 * options.queues
    plan.queueCount = { _, _ in queueCount }
    let features = try VhostUser.negotiate(&t, plan: plan)
    let config = try NetConfig(reading: t, features: features)
    let packed = features.contains(bit: VirtioFeature.ringPacked)
    var size = vhost.maxQueueSize
    if !packed { while size & (size - 1) != 0 { size &= size - 1 } }
    let info = PortInfo(
      address: port, path: "vhost-user",
      detail:
        "\(packed ? "packed" : "split") ring; \(features.names(device: .net).joined(separator: ",")); \(space.byteCount >> 20) MiB shared memory",
      mac: config.mac, mtu: config.mtu ?? 1500, queues: options.queues, rxRingSize: size, txRingSize: size, linkUp: config.linkUp)
    if packed {
      let s = try VhostUser.setUp(PackedVirtqueue.self, transport: t, features: features, plan: plan)
      return (.vhostPacked(box(VhostNetPort(session: s, pairs: options.queues, address: port, logger: logger))), info, space)
    } else {
      let s = try VhostUser.setUp(SplitVirtqueue.self, transport: t, features: features, plan: plan)
      return (.vhostSplit(box(VhostNetPort(session: s, pairs: options.queues, address: port, logger: logger))), info, space)
    }
  }
}
