import VirtioNet

/// The gratuitous packet a port sends when its device asks it to announce
/// itself (§5.1.6.5.4, VIRTIO_NET_S_ANNOUNCE — after a live migration, so the
/// network learns where the MAC lives now): a RARP "request reverse" from
/// the port's MAC (RFC 903), as QEMU itself sends for a NIC whose driver does
/// not announce. Switches learn the source address; nobody needs to answer.
enum Announcement {
  /// Ethernet header (14) + RARP (28), padded to the 60-byte minimum.
  static let frameLength = 60
  static let etherTypeRARP: UInt16 = 0x8035

  /// Writes the frame for `mac` at `p` (at least `frameLength` bytes).
  static func writeRARP(mac: MACAddress, to p: UnsafeMutableRawPointer) {
    let m = [mac.bytes.0, mac.bytes.1, mac.bytes.2, mac.bytes.3, mac.bytes.4, mac.bytes.5]
    var f = [UInt8](repeating: 0, count: frameLength)
    for i in 0..<6 { f[i] = 0xFF }  // broadcast
    for i in 0..<6 { f[6 + i] = m[i] }
    f[12] = UInt8(etherTypeRARP >> 8)
    f[13] = UInt8(etherTypeRARP & 0xFF)
    // htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4, op 3 (request reverse).
    f.replaceSubrange(14..<22, with: [0, 1, 0x08, 0x00, 6, 4, 0, 3])
    for i in 0..<6 { f[22 + i] = m[i] }  // sender hardware address; sender IP 0
    for i in 0..<6 { f[32 + i] = m[i] }  // target hardware address; target IP 0
    // SAFETY: the caller gives a buffer of at least `frameLength` bytes (a pool buffer holds a whole frame).
    f.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: frameLength) }
  }
}
