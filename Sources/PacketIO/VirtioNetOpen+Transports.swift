import Logging
import VirtioCore
import VirtioSpec
import VirtioVFIO
import VirtioVhostUser

/// What differs per transport when a port opens: how the transport is opened
/// and what memory it shares with the group. The rest is `VirtioNetOpen.open`.
extension VirtioNetOpen {
  /// A virtio-net PCI function over VFIO, in the group's IOMMU container.
  static func open(_ address: PCIAddress, options: PortOptions, sharing: VFIODMASpace?, logger base: Logger) throws(VirtioError)
    -> (PortBackend, PortInfo, VFIODMASpace)
  {
    var logger = base
    logger[metadataKey: "pci"] = "\(address)"
    try preflight(address, logger: logger)
    let t = try VFIOPCITransport.open(address, options: options.vfio, logger: logger, sharing: sharing)
    let space = t.dmaSpace
    // Without the control queue only the first pair runs (§5.1.6.5.5).
    let (port, info) = try open(t, address: .pci(address), path: "vfio", pairsWithoutControlQueue: 1, options: options, logger: logger)
    return (.virtio(port), info, space)
  }

  /// A virtio-net PCI function without an IOMMU (`PortOptions.allowNoIOMMU`):
  /// on vfio-pci in VFIO's no-IOMMU mode (MSI-X kept), else on
  /// uio_pci_generic (polled queues); physical addresses either way. Its
  /// buffers are physical memory every other no-IOMMU port of the group can
  /// reach as well, so nothing is shared explicitly.
  static func openNoIOMMU(_ address: PCIAddress, options: PortOptions, logger base: Logger) throws(VirtioError) -> (PortBackend, PortInfo) {
    var logger = base
    logger[metadataKey: "pci"] = "\(address)"
    try preflight(address, logger: logger)
    if PCIFunction(address, logger: logger).inNoIOMMUGroup {
      var vfio = options.vfio
      vfio.allowNoIOMMU = true
      let t = try VFIOPCITransport.open(address, options: vfio, logger: logger)
      let (port, info) = try open(
        t, address: .pci(address), path: VFIOPCITransport.noIOMMUBackend, pairsWithoutControlQueue: 1, options: options, logger: logger)
      return (.virtio(port), info)
    }
    var uio = UIOPCIOptions()
    uio.dmaChunkSize = options.vfio.dmaChunkSize
    let t = try UIOPCITransport.open(address, options: uio, logger: logger)
    let (port, info) = try open(t, address: .pci(address), path: "uio", pairsWithoutControlQueue: 1, options: options, logger: logger)
    return (.virtio(port), info)
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

  /// A vhost-user net backend (DPDK's vhost behind dpdk-testpmd, OVS-DPDK,
  /// ...), mapping the group's shared memory. No control queue: the backend
  /// serves none; queue pairs come from VHOST_USER_PROTOCOL_F_MQ and
  /// SET_VRING_ENABLE, and the transport emulates the config space (MAC, link up).
  static func open(
    _ endpoint: VhostUserEndpoint, index: Int, options: PortOptions, memoryBytes: Int, sharing: SharedMemorySpace?, logger base: Logger
  ) throws(VirtioError) -> (PortBackend, PortInfo, SharedMemorySpace) {
    var logger = base
    logger[metadataKey: "port"] = "\(endpoint)"
    var vhost = VhostUserOptions()
    vhost.memoryBytes = memoryBytes
    vhost.pages = options.vfio.hugePages == .required ? .hugeRequired : options.vfio.hugePages == .disabled ? .small : .hugePreferred
    vhost.maxQueueSize = ringSize(options)
    vhost.queuePairs = options.queues
    // A locally administered MAC per port of the group (the backend has no config space).
    vhost.mac = [0x02, 0x76, 0x69, 0x6F, 0x00, UInt8(truncatingIfNeeded: index + 1)]
    let t = try VhostUserTransport.open(endpoint, deviceType: .net, options: vhost, logger: logger, sharing: sharing)
    let space = t.memorySpace
    // §5.1.2: 2 × queue pairs (VHOST_USER_GET_QUEUE_NUM), no control queue.
    let pairs = t.queueCount / 2
    let (port, info) = try open(
      t, address: .vhostUser(endpoint), path: "vhost-user", pairsWithoutControlQueue: pairs, options: options, logger: logger)
    return (.virtio(port), info, space)
  }

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
    let buffer = max(2048, BufferPool.roundedSize(PortGroup.headroom + frame))
    let burst = min(options.rxDescriptors, options.txDescriptors, 1024)
    let perPool = addresses.count * (options.rxDescriptors + options.txDescriptors + 4 * burst) + 256
    return rings + options.queues * perPool * buffer + (2 << 20)
  }

  /// The largest ring a vhost-user port sets up: the larger of --rxd/--txd, at most 32768.
  static func ringSize(_ options: PortOptions) -> Int { min(max(options.rxDescriptors, options.txDescriptors), 32768) }
}
