import VirtioCore

/// Where the L4 checksum of a frame lies, for frames whose checksum the kernel
/// left partial (TP_STATUS_CSUMNOTREADY: sent from this host, offloaded): IPv4
/// or IPv6 (no extension headers), one optional 802.1Q tag, TCP or UDP. The
/// packet gets the same metadata a virtio-net device gives with NEEDS_CSUM, so
/// whichever port sends it completes the checksum (device offload or software).
package enum ChecksumOffsets {
  package static func mark(_ b: inout PacketBuffer, pool: borrowing BufferPool) {
    let p = UnsafeRawPointer(pool.pointer(b) + Int(b.offset))
    let n = Int(b.length)
    func u8(_ i: Int) -> Int { Int(p.load(fromByteOffset: i, as: UInt8.self)) }
    func be16(_ i: Int) -> Int { u8(i) << 8 | u8(i + 1) }
    guard n >= 14 else { return }
    var l3 = 14
    var type = be16(12)
    if type == 0x8100, n >= 18 {
      type = be16(16)
      l3 = 18
    }
    var l4 = 0
    var proto = 0
    if type == 0x0800, n >= l3 + 20 {
      l4 = l3 + (u8(l3) & 0x0F) * 4
      proto = u8(l3 + 9)
    } else if type == 0x86DD, n >= l3 + 40 {
      l4 = l3 + 40
      proto = u8(l3 + 6)
    } else {
      return
    }
    let field = proto == 6 ? 16 : proto == 17 ? 6 : -1
    guard field >= 0, l4 + field + 2 <= n else { return }
    b.flags |= PacketBuffer.needsChecksum
    b.csumStart = UInt16(l4)
    b.csumOffset = UInt16(field)
  }
}
