internal import CPacketSys
import Glibc
import Logging
import VirtioCore
import VirtioNet

/// One AF_PACKET socket with its mmap'ed TPACKET_V2 RX and TX rings. Owns the
/// descriptor and the mapping; closes them once.
struct PacketSocket: ~Copyable {
  var ring: vio_pkt_ring
  /// The interface's MTU at open: the kernel refuses (and, with PACKET_LOSS,
  /// silently skips) a TX frame longer than MTU + 14 (+ 4 with a VLAN tag).
  let mtu: Int

  init(ifindex: Int32, frameSize: Int, rxFrames: Int, txFrames: Int, fanoutGroup: UInt16, name: String, mtu: Int) throws(VirtioError) {
    self.mtu = mtu
    var r = vio_pkt_ring()
    let rc = vio_pkt_open(&r, ifindex, UInt32(frameSize), UInt32(rxFrames), UInt32(txFrames), fanoutGroup)
    guard rc == 0 else {
      let e = -rc
      let step: String
      switch r.failed_step {
      case Int32(VIO_PKT_STEP_SOCKET): step = "socket(AF_PACKET)"
      case Int32(VIO_PKT_STEP_VERSION): step = "PACKET_VERSION TPACKET_V2"
      case Int32(VIO_PKT_STEP_RX_RING): step = "PACKET_RX_RING (\(rxFrames) frames of \(frameSize) bytes)"
      case Int32(VIO_PKT_STEP_TX_RING): step = "PACKET_TX_RING (\(txFrames) frames of \(frameSize) bytes)"
      case Int32(VIO_PKT_STEP_MMAP): step = "mmap of the rings"
      case Int32(VIO_PKT_STEP_BIND): step = "bind to \(name)"
      default: step = "PACKET_FANOUT (hash) group \(fanoutGroup)"
      }
      let advice =
        e == EPERM || e == EACCES
        ? "AF_PACKET needs CAP_NET_RAW: run as root (or give the binary cap_net_raw)"
        : e == ENOMEM ? "use smaller rings (--rxd/--txd) or raise the locked-memory limit" : "see `ip link show \(name)`"
      throw VirtioError(.transport, "port \(name): \(step) failed: \(Sys.errnoText(e)); \(advice)", errno: e)
    }
    ring = r
  }

  deinit {
    var r = ring
    vio_pkt_close(&r)
  }
}

/// A kernel network interface driven through AF_PACKET: one socket per queue,
/// all in one PACKET_FANOUT (hash) group so each flow stays on one socket.
struct KernelPort: ~Copyable {
  let name: String
  let ifindex: Int32
  var sockets: OwnedArray<PacketSocket?>
  var carrier: Bool

  static func open(_ name: String, options: PortOptions, bufferFrameBytes: Int, logger: Logger) throws(VirtioError) -> (
    UnsafeMutablePointer<KernelPort>, PortInfo
  ) {
    let index = try preflight(name)
    var mac = [UInt8](repeating: 0, count: 6)
    var mtu: Int32 = 0
    var flags: UInt32 = 0
    let rc = name.withCString { n in mac.withUnsafeMutableBufferPointer { vio_pkt_ifinfo(n, $0.baseAddress, &mtu, &flags) } }
    guard rc == 0 else {
      throw VirtioError(.transport, "port \(name): cannot read its MAC/MTU: \(Sys.errnoText(-rc))", errno: -rc)
    }
    if flags & UInt32(IFF_UP) == 0 {
      logger.warning("interface is down; no frames will move until `ip link set \(name) up`", metadata: ["port": "\(name)"])
    }
    // Frames: header + sockaddr_ll + the largest frame, a power of two (TPACKET block rules).
    var frameSize = 2048
    while frameSize < 128 + max(bufferFrameBytes, PortOptions.frameBytes(mtu: Int(mtu))) { frameSize <<= 1 }
    // One fanout group per interface and process (ids are per network namespace).
    let group = UInt16(1 + (Int(getpid()) &* 64 &+ Int(index)) % 0xFFFE)
    var sockets = OwnedArray<PacketSocket?>(capacity: options.queues)
    for _ in 0..<options.queues {
      let s = try PacketSocket(
        ifindex: index, frameSize: frameSize, rxFrames: options.rxDescriptors, txFrames: options.txDescriptors,
        fanoutGroup: options.queues > 1 ? group : 0, name: name, mtu: Int(mtu))
      sockets.append(s)
    }
    if options.promiscuous, let fd = sockets[0]?.ring.fd {
      let p = vio_pkt_promisc(fd, index, 1)
      if p != 0 { logger.warning("PACKET_MR_PROMISC failed", metadata: ["port": "\(name)", "errno": "\(-p)"]) }
    }
    let carrier = Self.readCarrier(name)
    let rxFrames = Int(sockets[0]?.ring.rx_frames ?? 0)
    let txFrames = Int(sockets[0]?.ring.tx_frames ?? 0)
    let m = MACAddress((mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]))
    let info = PortInfo(
      address: .interface(name), path: "kernel",
      detail: "AF_PACKET TPACKET_V2, \(options.queues) socket(s)\(options.queues > 1 ? " in fanout group \(group) (hash)" : ""), frames of \(frameSize) bytes",
      mac: m, mtu: Int(mtu), queues: options.queues, rxRingSize: rxFrames, txRingSize: txFrames, linkUp: carrier)
    return (box(KernelPort(name: name, ifindex: index, sockets: sockets, carrier: carrier)), info)
  }

  /// The interface's index; an error naming the interface when there is none.
  @discardableResult
  static func preflight(_ name: String) throws(VirtioError) -> Int32 {
    let index = name.withCString { vio_pkt_ifindex($0) }
    guard index > 0 else {
      throw VirtioError(
        .invalidArgument, "port \(name): there is no network interface \(name) (see `ip link`); for a PCI function write pci:BDF",
        errno: -index)
    }
    return index
  }

  /// /sys/class/net/<name>/carrier: 1 up, 0 down (unreadable while the interface is down: down).
  static func readCarrier(_ name: String) -> Bool {
    let fd = Glibc.open("/sys/class/net/\(name)/carrier", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var c: UInt8 = 0
    return read(fd, &c, 1) == 1 && c == UInt8(ascii: "1")
  }

  /// Socket `q`, moved out to its worker.
  mutating func takeSocket(_ q: Int) -> PacketSocket {
    precondition(sockets[q] != nil, "queue \(q) of \(name) was taken already")
    return sockets[q].take()!
  }

  mutating func check() -> Bool {
    carrier = Self.readCarrier(name)
    return carrier
  }
}
