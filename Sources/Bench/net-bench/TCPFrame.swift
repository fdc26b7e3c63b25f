import VirtioNet

/// `--gso`: the frames are TCP/IPv4 segments larger than one MSS, which the C
/// device hands over as GUEST_TSO4 packets (§5.1.6.4.1: gso_type TCPV4,
/// gso_size, NEEDS_CSUM) and the driver transmits either way it can.
enum GSOMode: String {
  /// HOST_TSO4 negotiated: each packet goes back to the device whole, with its GSO header.
  case device
  /// No HOST_TSO4: the driver cuts each packet into MSS-sized frames (`TCPSegmentation`).
  case software
}

/// Where the TCP/IPv4 frame's headers lie: Ethernet 14, IPv4 20, TCP 20.
enum TCPFrame {
  static let ipOffset = 14
  static let tcpOffset = 34
  static let headerLength = 54
  /// §5.1.6.2: NEEDS_CSUM's csum_offset for TCP (the checksum field in the TCP header).
  static let checksumOffset = 16

  /// A `length`-byte Ethernet frame holding one TCP/IPv4 segment (10.0.0.1:5201
  /// → 10.0.0.2:40000, ACK|PSH): IPv4 header checksum complete, TCP checksum
  /// partial (the pseudo-header's sum, as a sender with checksum offload leaves it).
  static func make(length: Int) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: length)
    func put16(_ at: Int, _ v: Int) {
      f[at] = UInt8(truncatingIfNeeded: v >> 8)
      f[at + 1] = UInt8(truncatingIfNeeded: v)
    }
    for i in 0..<6 {
      f[i] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x02][i]
      f[6 + i] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x01][i]
    }
    put16(12, 0x0800)
    let ip = ipOffset
    f[ip] = 0x45
    put16(ip + 2, length - ip)  // total length
    put16(ip + 4, 0x1234)  // identification
    put16(ip + 6, 0x4000)  // DF, no fragment offset
    f[ip + 8] = 64
    f[ip + 9] = 6  // TCP
    f[ip + 12...ip + 15] = [10, 0, 0, 1]
    f[ip + 16...ip + 19] = [10, 0, 0, 2]
    let tcp = tcpOffset
    put16(tcp, 5201)
    put16(tcp + 2, 40000)
    put16(tcp + 4, 0x1000)  // sequence number
    put16(tcp + 8, 0x2000)  // acknowledgement
    f[tcp + 12] = 5 << 4  // data offset: 20 bytes
    f[tcp + 13] = 0x18  // ACK | PSH
    put16(tcp + 14, 65535)
    for i in headerLength..<length { f[i] = UInt8(truncatingIfNeeded: i) }
    f.withUnsafeBytes { b in
      put16(ip + 10, Int(~InternetChecksum.sum(b.baseAddress! + ip, 20)))
      // Pseudo-header: source, destination, protocol, TCP length.
      let pseudo = UInt32(InternetChecksum.sum(b.baseAddress! + ip + 12, 8)) + 6 + UInt32(length - tcp)
      put16(tcp + checksumOffset, Int(InternetChecksum.sum(b.baseAddress!, 0, initial: pseudo)))
    }
    return f
  }
}
