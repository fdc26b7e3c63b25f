internal import CPacketSys
import Logging
import VirtioCore
import VirtioNet
import VirtioSpec
import VirtioVFIO

/// A virtio-net function driven over VFIO, after DRIVER_OK, with one ring
/// layout (fixed by negotiation). Its queue pairs are taken out one by one by
/// workers; the control queue stays here (control path only).
struct VirtioNetPort<Q: ConstructibleVirtqueue & ~Copyable>: ~Copyable {
  var session: VirtioPCISession<Q>
  var control: NetControlQueue<Q>?
  let features: FeatureSet
  let pairs: Int
  var linkUp: Bool
  var configInterrupts: UInt64 = 0

  /// §3.1.1 steps 7–8 and §5.1.5: queues (and their MSI-X vectors), DRIVER_OK,
  /// then through the control queue (§5.1.6.5) the number of queue pairs and
  /// the RX mode.
  init(
    transport: consuming VFIOPCITransport, features: FeatureSet, config: NetConfig, plan: VirtioOpenPlan, options: PortOptions,
    logger: Logger
  ) throws(VirtioError) {
    var session = try VirtioPCI.setUp(Q.self, transport: transport, features: features, plan: plan)
    var control: NetControlQueue<Q>? = nil
    if let ci = config.controlQueue(features: features) {
      let q = session.takeQueue(ci)
      var c = try NetControlQueue(queue: q, doorbell: session.transport.doorbell(queue: ci), features: features, memory: &session.transport.dma)
      // §5.1.6.5.5: only the first pair is used until VQ_PAIRS_SET.
      if options.queues > 1 {
        try c.setQueuePairs(options.queues, maxPairs: config.maxQueuePairs)
        logger.info("queue pairs set", metadata: ["pairs": "\(options.queues)", "max": "\(config.maxQueuePairs)"])
      }
      // §5.1.6.5.1: receive frames for any address (the forwarder is not the destination).
      if options.promiscuous && features.contains(bit: NetFeature.ctrlRx) {
        try c.setPromiscuous(true)
      }
      control = consume c
    }
    self.session = session
    self.control = control
    self.features = features
    self.pairs = options.queues
    self.linkUp = config.linkUp
  }

  /// Queue pair `q` (receiveq q = 2q, transmitq q = 2q+1, §5.1.2), rung from
  /// the worker's thread through its own doorbells.
  mutating func takePair(_ q: Int) -> NetQueuePair<Q, Q> {
    let rx = session.takeQueue(NetConfig.receiveQueue(pair: q))
    let tx = session.takeQueue(NetConfig.transmitQueue(pair: q))
    return NetQueuePair(
      rx: rx, tx: tx, rxDoorbell: session.transport.doorbell(queue: NetConfig.receiveQueue(pair: q)),
      txDoorbell: session.transport.doorbell(queue: NetConfig.transmitQueue(pair: q)), features: features)
  }

  /// The eventfd of receiveq `q`'s MSI-X vector.
  func receiveEventFD(_ q: Int) -> Int32? { session.transport.interruptEventFD(queue: NetConfig.receiveQueue(pair: q)) }
  func receiveVector(_ q: Int) -> UInt16? { session.transport.vector(ofQueue: NetConfig.receiveQueue(pair: q)) }
  var configEventFD: Int32? { session.transport.configInterruptEventFD }

  /// After a configuration-change interrupt (or on a timer): §2.1.2
  /// DEVICE_NEEDS_RESET, and the link state from the config (§5.1.4,
  /// re-read until config_generation is stable).
  mutating func check() -> (linkUp: Bool, needsReset: Bool) {
    if let fd = configEventFD { configInterrupts &+= vio_pkt_eventfd_drain(fd) }
    let status = session.transport.readStatus()
    if status.contains(.deviceNeedsReset) { return (linkUp, true) }
    if let c = try? NetConfig(reading: session.transport, features: features) { linkUp = c.linkUp }
    return (linkUp, false)
  }
}

/// Opening a virtio-net function: preflight in sysfs, VFIO, negotiation, then
/// the ring layout is chosen — the one place split and packed part ways.
enum VirtioNetOpen {
  static func open(_ address: PCIAddress, options: PortOptions, sharing: VFIODMASpace?, logger base: Logger) throws(VirtioError)
    -> (PortBackend, PortInfo, VFIODMASpace)
  {
    var logger = base
    logger[metadataKey: "pci"] = "\(address)"
    try preflight(address, logger: logger)
    var t = try VFIOPCITransport.open(address, options: options.vfio, logger: logger, sharing: sharing)
    let space = t.dmaSpace
    let features = try VirtioPCI.negotiate(&t, plan: VirtioOpenPlan(policy: options.netFeaturePolicy()))
    let config = try NetConfig(reading: t, features: features)
    let port = PortAddress.pci(address)
    guard options.queues >= 1, options.queues <= config.maxQueuePairs else {
      let why =
        features.contains(bit: NetFeature.mq)
        ? "it has \(config.maxQueuePairs) (max_virtqueue_pairs)"
        : "it offers no multiqueue (VIRTIO_NET_F_MQ; QEMU: mq=on and a netdev with queues=N)"
      throw VirtioError(.invalidArgument, "port \(port): cannot use \(options.queues) queue pairs: \(why); use --queues \(min(max(options.queues, 1), config.maxQueuePairs))")
    }
    if options.queues > 1 && !features.contains(bit: NetFeature.ctrlVQ) {
      throw VirtioError(.invalidArgument, "port \(port): \(options.queues) queue pairs need the control queue (VIRTIO_NET_F_CTRL_VQ), which the device does not offer; use --queues 1")
    }
    // Every queue the device has (§5.1.2: the control queue is after the last pair).
    var plan = VirtioOpenPlan(policy: options.netFeaturePolicy())
    let ctrl = config.controlQueue(features: features)
    let queueCount = 2 * config.maxQueuePairs + (ctrl == nil ? 0 : 1)
    plan.queueCount = { _, _ in queueCount }
    let rxd = options.rxDescriptors
    let txd = options.txDescriptors
    plan.queueSizeLimit = { i in i == ctrl ? 64 : (i % 2 == 0 ? rxd : txd) }
    let rxMax = t.maxQueueSize(0)
    let txMax = t.maxQueueSize(1)
    func ringSize(_ want: Int, _ max: Int, packed: Bool) -> Int {
      var s = min(want, max)
      if !packed { while s & (s - 1) != 0 { s &= s - 1 } }
      return s
    }
    let packed = features.contains(bit: VirtioFeature.ringPacked)
    let info = PortInfo(
      address: port, path: "vfio",
      detail: "\(packed ? "packed" : "split") ring; \(features.names(device: .net).joined(separator: ","))",
      mac: config.mac, mtu: config.mtu ?? 1500, queues: options.queues, rxRingSize: ringSize(rxd, rxMax, packed: packed),
      txRingSize: ringSize(txd, txMax, packed: packed), linkUp: config.linkUp)
    if packed {
      let p = try VirtioNetPort<PackedVirtqueue>(transport: t, features: features, config: config, plan: plan, options: options, logger: logger)
      return (.packed(box(p)), info, space)
    } else {
      let p = try VirtioNetPort<SplitVirtqueue>(transport: t, features: features, config: config, plan: plan, options: options, logger: logger)
      return (.split(box(p)), info, space)
    }
  }

  /// Before VFIO: the function exists and is virtio-net (a clear message for
  /// a wrong address rather than a VFIO error about groups).
  static func preflight(_ address: PCIAddress, logger: Logger) throws(VirtioError) {
    let f = PCIFunction(address, logger: logger)
    guard f.exists else {
      throw VirtioError(.invalidArgument, "port pci:\(address): there is no PCI function \(address) (see `lspci -D`)")
    }
    let vendor = f.vendorID ?? 0
    let device = f.deviceID ?? 0
    let type = vendor == DeviceType.pciVendorID ? DeviceType(pciDeviceID: device) : nil
    guard type == .net else {
      let what = type.map { "a \($0) device" } ?? "not a virtio device (vendor 0x\(String(vendor, radix: 16)), device 0x\(String(device, radix: 16)))"
      throw VirtioError(.invalidArgument, "port pci:\(address) is \(what), not virtio-net; pick a virtio-net function (1af4:1041) from `lspci -D -d 1af4:`")
    }
  }
}

/// Moves a value into a fresh heap cell (freed by `PortBackend.destroy`).
func box<T: ~Copyable>(_ value: consuming T) -> UnsafeMutablePointer<T> {
  // SAFETY: one T, initialised here; deinitialised and freed exactly once by the owner's destroy().
  let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
  p.initialize(to: value)
  return p
}

func unbox<T: ~Copyable>(_ p: UnsafeMutablePointer<T>) {
  p.deinitialize(count: 1)
  p.deallocate()
}

/// A port's backend, in a heap cell reached in place.
enum PortBackend {
  case split(UnsafeMutablePointer<VirtioNetPort<SplitVirtqueue>>)
  case packed(UnsafeMutablePointer<VirtioNetPort<PackedVirtqueue>>)
  case vhostSplit(UnsafeMutablePointer<VhostNetPort<SplitVirtqueue>>)
  case vhostPacked(UnsafeMutablePointer<VhostNetPort<PackedVirtqueue>>)
  case kernel(UnsafeMutablePointer<KernelPort>)

  /// Resets and releases the device (VFIO), stops the backend's rings and
  /// closes the connection (vhost-user) or closes the sockets left (kernel).
  func destroy() {
    switch self {
    case .split(let p): unbox(p)
    case .packed(let p): unbox(p)
    case .vhostSplit(let p): unbox(p)
    case .vhostPacked(let p): unbox(p)
    case .kernel(let p): unbox(p)
    }
  }
}
