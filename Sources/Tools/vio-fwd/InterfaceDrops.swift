import Glibc
import PacketIO

/// Kernel-path ports: frames the interface dropped after vio-fwd handed them
/// over (AF_PACKET took them, the kernel did not send them: a veth whose
/// peer's backlog is full, a driver that could not queue one). The socket
/// cannot see those; the interface counts them in its tx_dropped
/// (`ip -s link`), read at the start and the end of the run. Other senders'
/// drops on the same interface count too (a dedicated interface has none).
struct InterfaceDrops {
  /// The kernel interface of each port (nil: VFIO or vhost-user), and its tx_dropped at the start.
  let names: [String?]
  let start: [UInt64?]

  init(_ ports: [PortInfo]) {
    names = ports.map { p in
      if case .interface(let n) = p.address { return n }
      return p.fallback?.kernelName
    }
    start = names.map { $0.flatMap(Self.txDropped) }
  }

  /// Per port: tx_dropped since the start (0 when unknown).
  func sinceStart() -> [UInt64] {
    zip(names, start).map { name, s in
      guard let s, let now = name.flatMap(Self.txDropped), now >= s else { return 0 }
      return now - s
    }
  }

  /// /sys/class/net/<name>/statistics/tx_dropped.
  static func txDropped(_ name: String) -> UInt64? {
    guard !name.contains("/") else { return nil }
    let fd = open("/sys/class/net/\(name)/statistics/tx_dropped", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 32)
    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return nil }
    return UInt64(String(decoding: buf[0..<n], as: UTF8.self).filter { $0.isASCII && $0.isNumber })
  }
}
