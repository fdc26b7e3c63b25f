internal import CPacketSys
import VirtioOS
import Glibc
import Logging
import VirtioCore
import VirtioNet
import VirtioSpec

/// What the port group asks of a virtio-net port, whatever its transport and
/// ring layout. Control path only (the main thread): the existential stays
/// off the data path, where each `PortQueue` holds a concrete queue pair.
protocol VirtioPortControl: AnyObject {
  /// Queue pair `q` for the worker that will own it, and the descriptor it may sleep on (-1: poll).
  func takeQueue(_ q: Int) -> (backend: QueueBackend, wakeFD: Int32)
  /// A pool in memory the device (and every port sharing its memory) reaches.
  func makePool(buffers: Int, bufferSize: Int, headroom: Int) throws(VirtioError) -> BufferPool
  /// The descriptor the configuration-change interrupt makes readable, if any.
  var configEventFD: Int32? { get }
  /// After a configuration-change interrupt or on a timer: link state and DEVICE_NEEDS_RESET.
  func check() -> (linkUp: Bool, needsReset: Bool)
  var reconnects: UInt64 { get }
  var configInterrupts: UInt64 { get }
  /// The descriptor a surprise removal makes readable (VFIO's device-request interrupt), if any.
  var removalEventFD: Int32? { get }
  /// Main thread, every poll: true once the device was removed — it is then
  /// released and the workers stop its queues (the other ports carry on).
  func checkRemoved() -> Bool
  /// Main thread, after `check`: true when the device newly asked to be
  /// announced (VIRTIO_NET_S_ANNOUNCE, §5.1.6.5.4); the worker of pair 0
  /// sends the gratuitous packet, a later call acknowledges it.
  func checkAnnounce() -> Bool
  /// Announcements sent and acknowledged.
  var announcements: UInt64 { get }
  /// How the last recovery from DEVICE_NEEDS_RESET ended, once (NetRecovery.swift).
  func takeRecoveryOutcome() -> PortRecoveryOutcome?
  var recoveries: UInt64 { get }
  /// TEST ONLY: make the device itself set DEVICE_NEEDS_RESET.
  func testOnlyProvokeNeedsReset() -> Bool
  /// Control-queue settings at run time (main thread), each §5.1.6.5 command waited for.
  func setRSS(_ rss: RSSConfig) throws(VirtioError)
  func setMACFilter(_ macs: [MACAddress]) throws(VirtioError)
  func setVLAN(_ vid: UInt16, enabled: Bool) throws(VirtioError)
  func setMACAddress(_ mac: MACAddress) throws(VirtioError)
  func setPromiscuous(_ on: Bool) throws(VirtioError)
}

/// The ring layouts a `PortQueue` carries (split or packed), each to its case.
protocol NetLayout: ConstructibleVirtqueue & ~Copyable {
  static func wrap(_ p: UnsafeMutablePointer<VirtioPortQueue<Self>>) -> QueueBackend
}
extension SplitVirtqueue: NetLayout {
  static func wrap(_ p: UnsafeMutablePointer<VirtioPortQueue<SplitVirtqueue>>) -> QueueBackend { .split(p) }
}
extension PackedVirtqueue: NetLayout {
  static func wrap(_ p: UnsafeMutablePointer<VirtioPortQueue<PackedVirtqueue>>) -> QueueBackend { .packed(p) }
}

/// A virtio-net device after DRIVER_OK over any transport (VFIO, vhost-user,
/// the simulator), with one ring layout (fixed by negotiation). Its queue
/// pairs are taken out one by one by workers; the control queue, link state
/// and device restarts stay here (main thread).
final class VirtioNetPort<T: SessionTransport & ~Copyable, Q: NetLayout & ~Copyable>: VirtioPortControl {
  var session: VirtioSession<T, Q>
  var control: NetControlQueue<Q>?
  let hasControl: Bool
  let features: FeatureSet
  /// Refill, reclaim and doorbell pacing of every queue pair (`PortOptions.queuePolicy`).
  let queuePolicy: NetQueuePolicy
  let pairs: Int
  let board: ReconnectBoard
  var taken: [Bool]
  var linkUp: Bool
  var configInterrupts: UInt64 = 0
  /// The device went away; waiting for the workers' ring positions, then for it to come back.
  var reconnecting = false
  var epoch: UInt32 = 0
  var reconnects: UInt64 = 0
  /// The device was taken away (hot-unplug) and released.
  var removed = false
  /// The port's MAC (config, or the last one set), for its gratuitous packet (in `board` too, for the worker).
  var mac: MACAddress?
  /// The config's status said ANNOUNCE at the last `check`.
  var announceAsked = false
  /// When `check` last read the config (with a configuration-change vector).
  var lastConfigRead: UInt64 = 0
  /// An announce request handed to the worker of pair 0, not yet acknowledged to the device.
  var announcePending: UInt32? = nil
  var announcements: UInt64 = 0
  let address: PortAddress
  let logger: Logger
  /// DEVICE_NEEDS_RESET recovery (NetRecovery.swift).
  var recovery: NetPortRecovery
  /// What the control queue was told, for a recovery to tell it again.
  var controlState: NetControlState
  /// How long one reconnect attempt may wait (the main thread's poll loop waits that long).
  static var attemptMilliseconds: Int { 1000 }

  /// §5.1.5: with the control queue (§5.1.6.5), the number of queue pairs and the RX mode.
  init(session: consuming VirtioSession<T, Q>, config: NetConfig, options: PortOptions, address: PortAddress, logger: Logger)
    throws(VirtioError)
  {
    var s = session
    let features = s.features
    var control: NetControlQueue<Q>? = nil
    let controlState = NetControlState(options: options)
    if let ci = config.controlQueue(features: features) {
      let q = s.takeQueue(ci)
      var c = try NetControlQueue(queue: q, doorbell: s.transport.doorbell(queue: ci), features: features, memory: &s.transport.dma)
      try controlState.apply(to: &c, config: config, features: features)
      logger.info(
        "control state set",
        metadata: [
          "pairs": "\(options.queues)", "rss": "\(options.rss != nil)", "promiscuous": "\(options.promiscuous)",
          "hash_report": "\(features.contains(bit: NetFeature.hashReport))",
        ])
      control = consume c
    }
    self.session = s
    self.hasControl = config.controlQueue(features: features) != nil
    self.control = control
    self.features = features
    self.queuePolicy = options.queuePolicy
    self.pairs = options.queues
    self.board = ReconnectBoard(pairs: options.queues)
    self.board.setAnnounceMAC(options.macAddress ?? config.mac)
    self.taken = Array(repeating: false, count: options.queues)
    self.linkUp = config.linkUp
    // The address set with CTRL_MAC_ADDR_SET (§5.1.6.5.2) is the device's from here on: announced, reported.
    self.mac = options.macAddress ?? config.mac
    self.address = address
    self.logger = logger
    self.controlState = controlState
    self.recovery = NetPortRecovery()
  }

  /// Why a control-queue setting cannot be made now, if it cannot.
  func requireControl(_ what: String) throws(VirtioError) {
    guard !removed else { throw VirtioError(.invalidArgument, "port \(address) was removed; \(what) is impossible") }
    guard hasControl else {
      throw VirtioError(.missingFeatures, "port \(address) has no control queue (VIRTIO_NET_F_CTRL_VQ), needed for \(what)")
    }
  }

  func setRSS(_ rss: RSSConfig) throws(VirtioError) {
    try requireControl("RSS")
    let config = try NetConfig(reading: session.transport, features: features)
    try control?.setRSS(rss, config: config, pairs: pairs)
    controlState.rss = rss
  }

  func setMACFilter(_ macs: [MACAddress]) throws(VirtioError) {
    try requireControl("a MAC filter")
    try control?.setMACTable(unicast: macs.filter { !$0.isMulticast }, multicast: macs.filter(\.isMulticast))
    controlState.macFilter = macs
  }

  func setVLAN(_ vid: UInt16, enabled: Bool) throws(VirtioError) {
    try requireControl("a VLAN filter")
    try control?.setVLAN(vid, enabled: enabled)
    controlState.vlans.removeAll { $0 == vid }
    if enabled { controlState.vlans.append(vid) }
  }

  func setMACAddress(_ mac: MACAddress) throws(VirtioError) {
    try requireControl("setting the MAC address")
    try control?.setMACAddress(mac)
    controlState.macAddress = mac
    // §5.1.6.5.2: the device's address from here on — announced and reported as such.
    self.mac = mac
    board.setAnnounceMAC(mac)
  }

  func setPromiscuous(_ on: Bool) throws(VirtioError) {
    try requireControl("promiscuous mode")
    try control?.setPromiscuous(on)
    controlState.promiscuous = on
  }

  /// Queue pair `q` (receiveq q = 2q, transmitq q = 2q+1, §5.1.2), rung from
  /// the worker's thread through its own doorbells. The worker may sleep on
  /// the receive queue's interrupt only when no other receive queue shares it.
  func takeQueue(_ q: Int) -> (backend: QueueBackend, wakeFD: Int32) {
    taken[q] = true
    let rxIndex = NetConfig.receiveQueue(pair: q)
    let txIndex = NetConfig.transmitQueue(pair: q)
    let rx = session.takeQueue(rxIndex)
    let tx = session.takeQueue(txIndex)
    let pair = NetQueuePair(
      rx: rx, tx: tx, rxDoorbell: session.transport.doorbell(queue: rxIndex), txDoorbell: session.transport.doorbell(queue: txIndex),
      features: features, policy: queuePolicy)
    let port = VirtioPortQueue(pair: pair, control: board.control(pair: q), announces: q == 0)
    return (Q.wrap(box(port)), wakeFD(q))
  }

  private func wakeFD(_ q: Int) -> Int32 {
    let receiveQueues = (0..<pairs).map { NetConfig.receiveQueue(pair: $0) }
    let mine = NetConfig.receiveQueue(pair: q)
    if let v = session.transport.vector(ofQueue: mine),
      let other = receiveQueues.first(where: { $0 != mine && session.transport.vector(ofQueue: $0) == v })
    {
      logger.warning(
        "receive queues share an interrupt vector: hybrid/interrupt mode polls them instead",
        metadata: ["port": "\(address)", "queues": "\(mine),\(other)", "vector": "\(v)"])
      return -1
    }
    return session.transport.interruptEventFD(queue: mine) ?? -1
  }

  func makePool(buffers: Int, bufferSize: Int, headroom: Int) throws(VirtioError) -> BufferPool {
    do throws(VirtioError) {
      return try BufferPool(count: buffers, bufferSize: bufferSize, headroom: headroom, memory: &session.transport.dma)
    } catch {
      var e = error
      if e.code == .dmaAllocation {
        e.message =
          "no room for a pool of \(buffers) × \(bufferSize) bytes in the memory \(address) reaches (\(error.message)); ask for smaller pools, or — vhost-user, whose shared memory is sized when the group opens — set PortOptions.vhostMemoryBytes larger"
      }
      throw e
    }
  }

  var configEventFD: Int32? { removed ? nil : session.transport.configInterruptEventFD }

  var removalEventFD: Int32? { removed ? nil : session.transport.removalEventFD }

  /// Surprise removal: the bus asked for the device back (or it reads
  /// all-ones). The workers are told first (their pairs stop at the next
  /// burst), then the device is released — its doorbells become harmless
  /// memory, so a worker mid-burst touches nothing gone — and sleeping
  /// workers are woken so they notice.
  func checkRemoved() -> Bool {
    if removed { return true }
    guard session.transport.deviceRemoved() else { return false }
    removed = true
    linkUp = false
    board.markRemoved()
    session.transport.releaseRemovedDevice()
    for q in 0..<pairs where taken[q] {
      guard let fd = session.transport.interruptEventFD(queue: NetConfig.receiveQueue(pair: q)) else { continue }
      _ = EventFD.signal(fd)
    }
    logger.warning("the device was removed: its queues stopped and it was released; the other ports carry on", metadata: ["port": "\(address)"])
    return true
  }

  /// Main thread, every poll. A device that went away and may come back (a
  /// vhost-user backend hung up): link down, the workers asked for their ring
  /// positions; once all reported, one reconnect attempt per call (at most
  /// `attemptMilliseconds`), then link up. Otherwise §2.1.2
  /// DEVICE_NEEDS_RESET (recovered in-process, NetRecovery.swift), and the
  /// link (§5.1.4 status): read on every call without a configuration-change
  /// vector; with one, after its interrupt and at least every
  /// `configRereadNanoseconds` (an interrupt lost costs that much staleness).
  func check() -> (linkUp: Bool, needsReset: Bool) {
    if recovery.failed != nil || recovery.phase != 0 {
      // Drained, or the group's poll would wake at once until the recovery ends.
      if let fd = configEventFD { configInterrupts &+= EventFD.drain(fd) }
      return recovery.failed != nil ? (false, false) : continueRecovery()
    }
    if reconnecting || session.peerGone() { return resume() }
    var changed = true
    if let fd = configEventFD {
      let fired = EventFD.drain(fd)
      configInterrupts &+= fired
      let now = monotonicNanoseconds()
      changed = fired > 0 || now &- lastConfigRead >= Self.configRereadNanoseconds
      if changed { lastConfigRead = now }
    }
    if Self.asksForReset(session.transport.readStatus()) { return beginRecovery() }
    // Each config read is a trip to the device model (a VM exit; under TCG,
    // QEMU's big lock, which stalls this vCPU while QEMU moves frames).
    if changed, let status = NetConfig.readStatus(session.transport, features: features) {
      linkUp = status & NetStatus.linkUp != 0
      announceAsked = status & NetStatus.announce != 0
    }
    return (linkUp, false)
  }

  /// With a configuration-change vector: the longest the link goes without
  /// a config read when no interrupt comes.
  static var configRereadNanoseconds: UInt64 { 1_000_000_000 }

  /// §5.1.6.5.4 "Gratuitous Packet Sending": the device sets
  /// VIRTIO_NET_S_ANNOUNCE (and raises the config interrupt) when the guest
  /// moved (live migration); the driver sends a gratuitous packet for its MAC,
  /// then acknowledges with VIRTIO_NET_CTRL_ANNOUNCE_ACK, which clears the bit.
  /// The packet goes out of pair 0's transmit queue, from its worker's thread.
  func checkAnnounce() -> Bool {
    guard !removed, control != nil, features.contains(bit: NetFeature.guestAnnounce) else { return false }
    if let asked = announcePending {
      // Sent (or nobody owns pair 0 to send it): acknowledge.
      guard !taken[0] || board.announced(pair: 0) == asked else { return false }
      announcePending = nil
      do throws(VirtioError) {
        try control?.acknowledgeAnnounce()
        announcements &+= 1
        logger.info("announced (gratuitous RARP sent, ANNOUNCE_ACK)", metadata: ["port": "\(address)"])
      } catch {
        logger.warning("ANNOUNCE_ACK failed: \(error.message)", metadata: ["port": "\(address)"])
      }
      announceAsked = false
      return false
    }
    guard announceAsked else { return false }
    announceAsked = false
    announcePending = board.requestAnnounce()
    // A worker asleep on its receive interrupt would serve the request only at the next frame.
    if taken[0], let fd = session.transport.interruptEventFD(queue: NetConfig.receiveQueue(pair: 0)) { _ = EventFD.signal(fd) }
    return true
  }

  private func resume() -> (linkUp: Bool, needsReset: Bool) {
    if !reconnecting {
      linkUp = false
      reconnecting = true
      epoch = board.requestDrain()
      logger.warning(
        "the device went away (\(session.transport.target) hung up): link down; waiting for it to come back (frames sent meanwhile are dropped and counted)",
        metadata: ["port": "\(address)"])
      // Wake workers asleep on their receive interrupts so they drain and report.
      for q in 0..<pairs where taken[q] {
        guard let fd = session.transport.interruptEventFD(queue: NetConfig.receiveQueue(pair: q)) else { continue }
        _ = EventFD.signal(fd)
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
      "reconnected to the restarted device: link up",
      metadata: [
        "port": "\(address)",
        "resume": "\(resume.sorted { $0.key < $1.key }.map { "q\($0.key):\($0.value)" }.joined(separator: " "))",
      ])
    return (true, false)
  }
}

/// Opening a virtio-net device over a transport just opened: negotiation with
/// the net driver's policy, queue-pair checks, then the ring layout is chosen
/// — the one place split and packed part ways.
enum VirtioNetOpen {
  static func open<T: SessionTransport & ~Copyable>(
    _ transport: consuming T, address port: PortAddress, path: String, pairsWithoutControlQueue: Int, options: PortOptions,
    logger: Logger
  ) throws(VirtioError) -> (VirtioPortControl, PortInfo) {
    var t = transport
    guard t.deviceType == .net else {
      throw VirtioError(.invalidArgument, "port \(port) is a \(t.deviceType) device, not virtio-net")
    }
    var plan = SessionPlan<T>(policy: options.netFeaturePolicy())
    let features: FeatureSet
    do throws(VirtioError) {
      features = try VirtioDevice.negotiate(&t, plan: plan)
    } catch {
      // RSS and filters make features required that the kernel driver would not give either.
      guard error.code == .missingFeatures, options.usesControlFeatures else { throw error }
      throw VirtioError(
        .missingFeatures,
        "port \(port): \(error.message.replacing("; use the kernel driver for this device", with: "")); the RSS / MAC / VLAN settings asked for need them (QEMU: virtio-net-pci mq=on,rss=on,hash=on on a multi-queue netdev with vhost=off; ctrl_vlan, ctrl_mac_addr); leave those settings out for this device")
    }
    let config = try NetConfig(reading: t, features: features)
    // §5.1.6.5.5: more than one pair through the control queue (VQ_PAIRS_SET);
    // a transport that enables rings itself (vhost-user) offers its own count.
    let ctrl = config.controlQueue(features: features)
    let available = ctrl == nil ? pairsWithoutControlQueue : config.maxQueuePairs
    guard options.queues >= 1, options.queues <= available else {
      let why =
        ctrl != nil
        ? "it has \(config.maxQueuePairs) (max_virtqueue_pairs)"
        : "it offers \(available) without a control queue (VIRTIO_NET_F_CTRL_VQ and MQ; QEMU: mq=on and a netdev with queues=N; DPDK vhost: queues=N in --vdev net_vhost0,...)"
      throw VirtioError(
        .invalidArgument, "port \(port): cannot use \(options.queues) queue pairs: \(why); use --queues \(min(max(options.queues, 1), available))")
    }
    // Every pair the device may enable (§5.1.2), and the control queue after the last.
    let queueCount = ctrl.map { $0 + 1 } ?? 2 * options.queues
    plan.queueCount = { _, _ in queueCount }
    let rxd = options.rxDescriptors
    let txd = options.txDescriptors
    plan.queueSizeLimit = { i in i == ctrl ? 64 : (i % 2 == 0 ? rxd : txd) }
    let packed = features.contains(bit: VirtioFeature.ringPacked)
    let rxMax = t.maxQueueSize(0)
    let txMax = t.maxQueueSize(1)
    func ringSize(_ want: Int, _ max: Int) -> Int {
      var s = min(want, max)
      if !packed { while s & (s - 1) != 0 { s &= s - 1 } }
      return s
    }
    let rxRing = ringSize(rxd, rxMax)
    let txRing = ringSize(txd, txMax)
    let names = features.names(device: .net).joined(separator: ",")
    let addressing = t.dmaAddressing
    func info(_ transport: String) -> PortInfo {
      var i = PortInfo(
        address: port, path: path, detail: "\(packed ? "packed" : "split") ring; \(transport); features \(names)",
        mac: options.macAddress ?? config.mac,
        mtu: config.mtu ?? 1500, queues: options.queues, rxRingSize: rxRing, txRingSize: txRing, linkUp: config.linkUp)
      i.dmaAddressing = addressing
      i.mergeableReceiveBuffers = features.contains(bit: NetFeature.mrgRxbuf)
      i.offloads = NetOffloads(features: features)
      return i
    }
    if packed {
      let s = try VirtioDevice.setUp(PackedVirtqueue.self, transport: t, features: features, plan: plan)
      let summary = s.transport.summary
      return (try VirtioNetPort(session: s, config: config, options: options, address: port, logger: logger), info(summary))
    } else {
      let s = try VirtioDevice.setUp(SplitVirtqueue.self, transport: t, features: features, plan: plan)
      let summary = s.transport.summary
      return (try VirtioNetPort(session: s, config: config, options: options, address: port, logger: logger), info(summary))
    }
  }
}

/// Moves a value into a fresh heap cell (freed by its owner with `unbox`).
func box<T: ~Copyable>(_ value: consuming T) -> UnsafeMutablePointer<T> {
  // SAFETY: one T, initialised here; deinitialised and freed exactly once by the owner.
  let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
  p.initialize(to: value)
  return p
}

func unbox<T: ~Copyable>(_ p: UnsafeMutablePointer<T>) {
  p.deinitialize(count: 1)
  p.deallocate()
}

/// A port's backend: a virtio-net device (any transport; control path behind
/// a protocol) or a kernel interface in a heap cell reached in place.
enum PortBackend {
  case virtio(VirtioPortControl)
  case kernel(UnsafeMutablePointer<KernelPort>)

  /// The kernel port's sockets are closed here; a virtio port is reset and
  /// released when its last reference (this one) goes.
  func destroy() {
    if case .kernel(let p) = self { unbox(p) }
  }
}
