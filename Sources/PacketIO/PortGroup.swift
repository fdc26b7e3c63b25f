internal import CPacketSys
import VirtioOS
import Logging
import VirtioCore
import VirtioNet
import VirtioSpec
import VirtioVFIO
import VirtioVhostUser

/// A set of ports opened together: every VFIO function in one IOMMU
/// container (one `VFIODMASpace`), every vhost-user backend mapping one
/// shared memfd (one `SharedMemorySpace`), so a buffer pool made here serves
/// all of them and a packet received on one can be transmitted on another as
/// is. Kernel (AF_PACKET) ports copy, so they join either kind of group; a
/// group does not mix VFIO and vhost-user ports (no memory both can reach).
///
/// The main thread owns the group: it opens the ports, hands one `PortQueue`
/// per (port, queue) to worker threads, makes their pools, watches link state
/// (`pollEvents`) and reads counters (`stats`). Join the workers — drop their
/// queues and pools — before the group goes: it resets the devices and
/// releases the DMA memory their rings and buffers live in.
public struct PortGroup: ~Copyable {
  let backends: [PortBackend]
  /// What each port is, in the order given (`mac` follows `setMACAddress`).
  public private(set) var ports: [PortInfo]
  public let queuesPerPort: Int
  /// Bytes per pool buffer: `PortOptions.bufferSize` (rounded up to 64), else
  /// headroom + the largest frame any port's MTU allows.
  public let bufferSize: Int
  let board: StatsBoard
  var host: ProcessMemory
  let space: VFIODMASpace?
  var taken: [Bool]
  /// Kernel path: the socket of each taken queue, for PACKET_STATISTICS.
  var kernelFDs: [Int32]
  var kernelDrops: [UInt64]
  var linkUp: [Bool]
  var needsReset: [Bool]
  var removed: [Bool]
  /// The device asked for a reset and could not be set up again (NetRecovery.swift).
  var failed: [Bool]
  let logger: Logger
  /// Headroom in front of every packet (room for the virtio-net header, §5.1.6).
  public static let headroom = 64

  /// Opens `addresses` as one group (see the type's comment for what may be grouped).
  public static func open(_ addresses: [PortAddress], options: PortOptions) throws(VirtioError) -> PortGroup {
    guard !addresses.isEmpty else { throw VirtioError(.invalidArgument, "no port given; name at least one (pci:BDF, vhost-user:/path.sock or an interface)") }
    try check(options)
    for (i, a) in addresses.enumerated() where addresses[..<i].contains(a) {
      throw VirtioError(.invalidArgument, "port \(a) is given twice; each port may appear once")
    }
    try checkMemoryDomains(addresses)
    if options.usesControlFeatures, let k = addresses.first(where: { if case .interface = $0 { true } else { false } }) {
      throw VirtioError(
        .invalidArgument,
        "port \(k) is a kernel interface: RSS and MAC/VLAN filters are virtio-net control-queue settings of pci: and vhost-user: ports; leave them out or drop that port")
    }
    // Every port exists and is what it says before any is opened: a typo in
    // the last port must not first take the others through VFIO.
    for a in addresses {
      switch a {
      case .pci(let bdf): try VirtioNetOpen.preflight(bdf, logger: options.logger)
      case .vhostUser: break  // the transport waits for the socket (connectTimeout) and says what is missing
      case .interface(let name): try KernelPort.preflight(name)
      case .device(let name):
        throw VirtioError(.invalidArgument, "port \(name): a device is opened with PortGroup.open(transport:), not by name")
      }
    }
    var backends: [PortBackend] = []
    var infos: [PortInfo] = []
    var space: VFIODMASpace? = nil
    var shared: SharedMemorySpace? = nil
    let vhostBytes = VirtioNetOpen.memoryBytes(for: addresses, options: options)
    do throws(VirtioError) {
      for (index, a) in addresses.enumerated() {
        switch a {
        case .pci(let bdf):
          let (b, info, s) = try VirtioNetOpen.openOrFallBack(bdf, options: options, sharing: space, logger: options.logger)
          backends.append(b)
          infos.append(info)
          if let s { space = s }
        case .vhostUser(let endpoint):
          let (b, info, s) = try VirtioNetOpen.open(
            endpoint, index: index, options: options, memoryBytes: vhostBytes, sharing: shared, logger: options.logger)
          backends.append(b)
          infos.append(info)
          shared = s
        case .interface(let name):
          let (k, info) = try KernelPort.open(name, options: options, bufferFrameBytes: 0, logger: options.logger)
          backends.append(.kernel(k))
          infos.append(info)
        case .device: break  // refused above
        }
        let i = infos[infos.count - 1]
        options.logger.info(
          "port open",
          metadata: [
            "port": "\(a)", "path": "\(i.path)", "mac": "\(i.mac.map { "\($0)" } ?? "-")", "mtu": "\(i.mtu)", "queues": "\(i.queues)",
            "rx_ring": "\(i.rxRingSize)", "tx_ring": "\(i.txRingSize)", "link": "\(i.linkUp ? "up" : "down")", "detail": "\(i.detail)",
          ])
      }
    } catch {
      // Later ports failed: release the earlier ones (reset, unmap, close).
      for b in backends.reversed() { b.destroy() }
      throw error
    }
    let group = PortGroup(backends: backends, ports: infos, space: space, options: options)
    try group.checkBufferSize(options)
    return group
  }

  /// A group of one port: the virtio-net device behind `transport`, just
  /// opened — any transport, a simulated device in tests (the same session,
  /// port and queues as over VFIO or vhost-user).
  public static func open<T: SessionTransport & ~Copyable>(transport: consuming T, options: PortOptions = PortOptions()) throws(VirtioError)
    -> PortGroup
  {
    try check(options)
    let address = PortAddress.device(transport.target)
    let (port, info) = try VirtioNetOpen.open(
      transport, address: address, path: "userspace", pairsWithoutControlQueue: 1, options: options, logger: options.logger)
    let group = PortGroup(backends: [.virtio(port)], ports: [info], space: nil, options: options)
    try group.checkBufferSize(options)
    return group
  }

  static func check(_ options: PortOptions) throws(VirtioError) {
    try options.checkFilters()
    guard options.queues >= 1, options.queues <= 32 else {
      throw VirtioError(.invalidArgument, "\(options.queues) queues per port: use 1 to 32")
    }
    if let size = options.bufferSize, size < 256 || size > 65536 {
      throw VirtioError(.invalidArgument, "buffer size \(size): use 256 to 65536 bytes (or leave it unset to fit the largest frame)")
    }
    guard options.rxDescriptors >= 1, options.rxDescriptors <= 32768, options.txDescriptors >= 1, options.txDescriptors <= 32768 else {
      throw VirtioError(.invalidArgument, "ring sizes \(options.rxDescriptors)/\(options.txDescriptors): use 1 to 32768 descriptors")
    }
  }

  init(backends: [PortBackend], ports infos: [PortInfo], space: VFIODMASpace?, options: PortOptions) {
    let frame = infos.map { PortOptions.frameBytes(mtu: $0.mtu) }.max() ?? 1518
    let slots = infos.count * options.queues
    self.backends = backends
    self.ports = infos
    self.queuesPerPort = options.queues
    self.bufferSize = options.bufferSize.map(BufferPool.roundedSize) ?? max(2048, BufferPool.roundedSize(Self.headroom + frame))
    self.board = StatsBoard(slots: slots)
    self.host = ProcessMemory()
    self.space = space
    self.taken = Array(repeating: false, count: slots)
    self.kernelFDs = Array(repeating: -1, count: slots)
    self.kernelDrops = Array(repeating: 0, count: slots)
    self.linkUp = infos.map(\.linkUp)
    self.needsReset = infos.map { _ in false }
    self.removed = infos.map { _ in false }
    self.failed = infos.map { _ in false }
    self.logger = options.logger
  }

  deinit {
    for b in backends.reversed() { b.destroy() }
  }

  /// Pool buffers must be reachable by every device of the group: VFIO
  /// functions reach the IOMMU container's memory, vhost-user backends the
  /// memfd they map; only the kernel path (which copies) takes either. So a
  /// group is VFIO and kernel ports, or vhost-user and kernel ports.
  static func checkMemoryDomains(_ addresses: [PortAddress]) throws(VirtioError) {
    guard let v = addresses.first(where: \.isVhostUser), let p = addresses.first(where: \.isPCI) else { return }
    throw VirtioError(
      .invalidArgument,
      "ports \(p) and \(v) cannot share a group: their buffers would have to be both IOMMU-mapped for VFIO and in the memory the vhost-user backend maps; run one forwarder per kind (a vhost-user port can be grouped with other vhost-user ports and kernel interfaces)")
  }

  public var count: Int { backends.count }

  /// Buffers smaller than a port's largest frame: only a virtio port with
  /// MRG_RXBUF can receive such frames (as chains).
  func checkBufferSize(_ options: PortOptions) throws(VirtioError) {
    for p in ports where !p.mergeableReceiveBuffers && bufferSize - Self.headroom < PortOptions.frameBytes(mtu: p.mtu) {
      throw VirtioError(
        .invalidArgument,
        "port \(p.address): buffers of \(bufferSize) bytes cannot hold its \(PortOptions.frameBytes(mtu: p.mtu))-byte frames (MTU \(p.mtu)) without VIRTIO_NET_F_MRG_RXBUF (\(p.path == "kernel" ? "a kernel port copies each frame into one buffer" : "not negotiated")); use a buffer size of at least \(PortOptions.frameBytes(mtu: p.mtu) + Self.headroom) or leave it unset")
    }
  }

  /// Queue `queue` of port `port`, for the worker that will own it (each
  /// once). VFIO: its RX ring is not filled until `PortQueue.start(pool:)`.
  public mutating func takeQueue(port: Int, queue: Int) -> PortQueue {
    precondition(port >= 0 && port < count && queue >= 0 && queue < queuesPerPort, "no queue \(queue) on port \(port)")
    let slot = port * queuesPerPort + queue
    precondition(!taken[slot], "queue \(queue) of port \(port) was taken already")
    taken[slot] = true
    switch backends[port] {
    case .virtio(let p):
      let (backend, fd) = p.takeQueue(queue)
      return PortQueue(backend: backend, port: port, queue: queue, slot: board.slot(slot), wakeFD: fd, wakeIsEventFD: true)
    case .kernel(let k):
      // SAFETY: the kernel port's cell lives until this group's deinit, and only the main thread, which owns the group, reaches it.
      let q = PacketSocketQueue(k.pointee.takeSocket(queue))
      let fd = q.fd
      kernelFDs[slot] = fd
      return PortQueue(backend: .kernel(box(q)), port: port, queue: queue, slot: board.slot(slot), wakeFD: fd, wakeIsEventFD: false)
    }
  }

  /// A pool of `buffers` packet buffers for one worker, in memory every port
  /// of the group can use (the shared VFIO DMA space, the memory the
  /// vhost-user backends map, or host memory).
  public mutating func makeBufferPool(count buffers: Int) throws(VirtioError) -> BufferPool {
    for case .virtio(let p) in backends {
      return try p.makePool(buffers: buffers, bufferSize: bufferSize, headroom: Self.headroom)
    }
    return try BufferPool(count: buffers, bufferSize: bufferSize, headroom: Self.headroom, memory: &host)
  }

  @available(*, deprecated, renamed: "makeBufferPool(count:)")
  public mutating func makePool(buffers: Int) throws(VirtioError) -> BufferPool { try makeBufferPool(count: buffers) }

  /// Buffers a worker serving one queue of every port needs: every ring full,
  /// a few bursts in hand, and slack.
  public func poolSize(burst: Int) -> Int {
    ports.reduce(0) { $0 + $1.rxRingSize + $1.txRingSize } + 4 * burst * ports.count + 256
  }

  // MARK: link state and counters (main thread)

  /// Sleeps up to `timeoutMilliseconds` on the ports' configuration-change
  /// and removal interrupts (and the stop fd), then checks every port: a
  /// surprise removal (the device is released, `PortEvent.removed`), DEVICE_NEEDS_RESET
  /// and the link (VFIO: §5.1.4 status after the config interrupt; vhost-user:
  /// the backend's socket — a hang-up is link down until the restarted
  /// backend is reconnected, which happens here, see `VirtioNetPort.check`;
  /// kernel: carrier). Returns what changed since the last call.
  public mutating func pollEvents(timeoutMilliseconds: Int) -> [PortEvent] {
    var fds: [Int32] = [StopSignal.fd]
    for case .virtio(let p) in backends {
      if let fd = p.configEventFD { fds.append(fd) }
      if let fd = p.removalEventFD { fds.append(fd) }
    }
    var ready = [UInt8](repeating: 0, count: fds.count)
    _ = fds.withUnsafeBufferPointer { f in
      ready.withUnsafeMutableBufferPointer { Poll.readable(f.baseAddress!, count: f.count, timeoutMilliseconds: timeoutMilliseconds, ready: $0.baseAddress!) }
    }
    var events: [PortEvent] = []
    for (i, b) in backends.enumerated() {
      if removed[i] { continue }
      if case .virtio(let p) = b, p.checkRemoved() {
        removed[i] = true
        linkUp[i] = false
        events.append(.removed(port: i))
        continue
      }
      var up = linkUp[i]
      var reset = false
      switch b {
      case .virtio(let p): (up, reset) = p.check()
      case .kernel(let k): up = k.pointee.check()
      }
      if reset && !needsReset[i] {
        needsReset[i] = true
        events.append(.needsReset(port: i))
      }
      // NEEDS_RESET recovered in-process (or not): before the link comes up again.
      if case .virtio(let p) = b, let outcome = p.takeRecoveryOutcome() {
        needsReset[i] = false
        switch outcome {
        case .recovered(let tx, let rx): events.append(.recovered(port: i, lostTx: tx, lostRx: rx))
        case .failed(let why):
          failed[i] = true
          events.append(.failed(port: i, reason: why))
        }
      }
      if up != linkUp[i] {
        linkUp[i] = up
        events.append(up ? .linkUp(port: i) : .linkDown(port: i))
      }
      if case .virtio(let p) = b, p.checkAnnounce() { events.append(.announce(port: i)) }
    }
    for s in 0..<kernelFDs.count where kernelFDs[s] >= 0 {
      var packets: UInt32 = 0
      var drops: UInt32 = 0
      if vio_pkt_statistics(kernelFDs[s], &packets, &drops) == 0 { kernelDrops[s] &+= UInt64(drops) }
    }
    return events
  }

  /// The link as last seen by `pollEvents` (or at open).
  public func isLinkUp(port: Int) -> Bool { linkUp[port] }

  /// Gratuitous announcements port `port` sent and acknowledged (§5.1.6.5.4; virtio only).
  public func announcements(port: Int) -> UInt64 {
    if case .virtio(let p) = backends[port] { return p.announcements }
    return 0
  }

  /// The port's device was removed (seen by `pollEvents`): its queues take and give nothing.
  public func isRemoved(port: Int) -> Bool { removed[port] }

  // MARK: control-queue settings at run time (virtio-net ports, main thread)

  /// VIRTIO_NET_CTRL_MQ_RSS_CONFIG on `port` (§5.1.6.5.7): a new key, hash
  /// types or indirection table, checked against the device's limits first.
  /// Flows move to the queues the new table names from the next packet.
  public mutating func setRSS(port: Int, _ rss: RSSConfig) throws(VirtioError) {
    try virtioControl(port, "RSS").setRSS(rss)
  }

  /// VIRTIO_NET_CTRL_MAC_TABLE_SET on `port` (§5.1.6.5.2): receive frames for
  /// these addresses besides the port's own (promiscuous mode off); [] clears.
  public mutating func setMACFilter(port: Int, _ macs: [MACAddress]) throws(VirtioError) {
    try virtioControl(port, "a MAC filter").setMACFilter(macs)
  }

  /// VIRTIO_NET_CTRL_VLAN_ADD / _DEL on `port` (§5.1.6.5.3; needs CTRL_VLAN, negotiated when `PortOptions.vlanFilter` is set).
  public mutating func setVLAN(port: Int, _ vid: UInt16, enabled: Bool) throws(VirtioError) {
    try virtioControl(port, "a VLAN filter").setVLAN(vid, enabled: enabled)
  }

  /// VIRTIO_NET_CTRL_MAC_ADDR_SET on `port` (§5.1.6.5.2; needs CTRL_MAC_ADDR).
  public mutating func setMACAddress(port: Int, _ mac: MACAddress) throws(VirtioError) {
    try virtioControl(port, "setting the MAC address").setMACAddress(mac)
    ports[port].mac = mac
  }

  /// VIRTIO_NET_CTRL_RX_PROMISC on `port` (§5.1.6.5.1; needs CTRL_RX).
  public mutating func setPromiscuous(port: Int, _ on: Bool) throws(VirtioError) {
    try virtioControl(port, "promiscuous mode").setPromiscuous(on)
  }

  func virtioControl(_ port: Int, _ what: String) throws(VirtioError) -> VirtioPortControl {
    guard port >= 0, port < backends.count else { throw VirtioError(.invalidArgument, "port \(port): the group has ports 0 ... \(backends.count - 1)") }
    guard case .virtio(let v) = backends[port] else {
      throw VirtioError(.invalidArgument, "port \(ports[port].address) is on the kernel path: \(what) is a virtio-net control-queue setting")
    }
    return v
  }

  /// Times port `port`'s device came back after going away — a vhost-user backend restart (0 on other paths).
  public func reconnects(port: Int) -> UInt64 {
    if case .virtio(let p) = backends[port] { return p.reconnects }
    return 0
  }

  /// Configuration-change interrupts port `port` took (VFIO; 0 on the vhost-user and kernel paths).
  public func configInterrupts(port: Int) -> UInt64 {
    if case .virtio(let p) = backends[port] { return p.configInterrupts }
    return 0
  }

  /// Counters of one queue as its worker last published them.
  public func stats(port: Int, queue: Int) -> NetQueueStats {
    let slot = port * queuesPerPort + queue
    var s = board.slot(slot).read()
    s.rxDropped &+= kernelDrops[slot]
    return s
  }

  /// Counters of every queue of a port, summed.
  public func stats(port: Int) -> NetQueueStats {
    (0..<queuesPerPort).reduce(NetQueueStats()) { $0 + stats(port: port, queue: $1) }
  }
}
