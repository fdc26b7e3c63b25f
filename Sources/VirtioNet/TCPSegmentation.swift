import VirtioCore
import VirtioSpec

/// Software segmentation of one TCP super-packet (a GSO frame: virtio-net
/// gso_type TCPV4 / TCPV6 with gso_size, §5.1.6.2 and §5.1.6.4.1) into frames
/// of at most `mss` payload bytes each, for a port whose device did not offer
/// HOST_TSO4/6 — what the device would have done. Each segment gets the
/// headers of the original with its IP length (and IPv4 identification and
/// header checksum), TCP sequence number, flags and checksum fixed up.
///
/// Nothing in the frame is trusted: `layout` reads the lengths the headers
/// claim and refuses any that point outside the frame, IP fragments, IPv6
/// extension headers, and anything but Ethernet (one optional 802.1Q tag) /
/// IPv4 or IPv6 / TCP. No allocation, no throw: a hot-path helper.
public enum TCPSegmentation {
  /// Why a frame cannot be segmented.
  public enum Refusal: Error, Equatable, Sendable {
    /// A header (Ethernet, IP, TCP) ends past the frame, or the IP length does.
    case truncated
    /// Neither IPv4 nor IPv6 (after at most one VLAN tag).
    case notIP
    /// IPv4 protocol / IPv6 next header is not TCP (IPv6 extension headers included).
    case notTCP
    /// An IPv4 fragment, an IPv4 header or TCP data offset below the minimum, or an IPv6 jumbogram.
    case badHeader
    /// gso_size 0.
    case zeroMSS
    /// The header's gso_type is not TCPV4 / TCPV6, or names the other IP version than the packet's.
    case gsoTypeMismatch
  }

  /// Where a super-packet's headers and payload lie, and how it splits.
  public struct Layout: Equatable, Sendable {
    public var l3: Int
    public var l4: Int
    /// Ethernet + IP + TCP headers (options included): copied into every segment.
    public var headerLength: Int
    /// TCP payload bytes (the IP length's, not the buffer's: trailing padding is dropped).
    public var payloadLength: Int
    public var isIPv6: Bool
    public var mss: Int

    /// 1 for a packet with no payload (it goes out as one frame, checksums fixed up).
    public var segmentCount: Int { payloadLength == 0 ? 1 : (payloadLength &+ mss &- 1) / mss }
    public func segmentPayload(_ i: Int) -> Int { min(mss, payloadLength &- i &* mss) }
    /// The frame length of segment `i`.
    public func segmentLength(_ i: Int) -> Int { headerLength &+ segmentPayload(i) }
  }

  /// `layout` for a packet whose virtio_net_hdr says `gsoType` (ECN bit
  /// allowed) and `gsoSize` (§5.1.6.4.1): the header is the device's word,
  /// the packet must agree with it (TCPV4 an IPv4 packet, TCPV6 an IPv6 one).
  /// `headerBytes`: how many bytes at `frame` may be read (a chain's head
  /// segment, whose headers must all lie in it); nil: all `length`.
  public static func layout(
    _ frame: UnsafeRawPointer, length: Int, headerBytes: Int? = nil, gsoType: UInt8, gsoSize: UInt16
  ) -> Result<Layout, Refusal> {
    let type = gsoType & ~VirtioNetHdr.gsoECN
    guard type == VirtioNetHdr.gsoTCPv4 || type == VirtioNetHdr.gsoTCPv6 else { return .failure(.gsoTypeMismatch) }
    switch layout(frame, length: length, headerBytes: headerBytes, mss: Int(gsoSize)) {
    case .success(let l):
      return l.isIPv6 == (type == VirtioNetHdr.gsoTCPv6) ? .success(l) : .failure(.gsoTypeMismatch)
    case .failure(let r):
      return .failure(r)
    }
  }

  /// Reads and checks the headers of `length` bytes at `frame` (of which
  /// only the first `headerBytes` are read, when given).
  public static func layout(_ frame: UnsafeRawPointer, length: Int, headerBytes: Int? = nil, mss: Int) -> Result<Layout, Refusal> {
    func u8(_ i: Int) -> Int { Int(frame.load(fromByteOffset: i, as: UInt8.self)) }
    func be16(_ i: Int) -> Int { u8(i) << 8 | u8(i &+ 1) }
    guard mss > 0 else { return .failure(.zeroMSS) }
    // Every header byte read lies below `readable`; the IP length is checked against `length`.
    let readable = min(headerBytes ?? length, length)
    guard readable >= 14 else { return .failure(.truncated) }
    var l3 = 14
    var type = be16(12)
    if type == 0x8100 {
      guard readable >= 18 else { return .failure(.truncated) }
      type = be16(16)
      l3 = 18
    }
    let l4: Int
    let end: Int
    let v6: Bool
    if type == 0x0800 {
      guard readable >= l3 &+ 20 else { return .failure(.truncated) }
      let ihl = (u8(l3) & 0x0F) &* 4
      guard u8(l3) >> 4 == 4, ihl >= 20 else { return .failure(.badHeader) }
      guard u8(l3 &+ 9) == 6 else { return .failure(.notTCP) }
      guard be16(l3 &+ 6) & 0x3FFF == 0 else { return .failure(.badHeader) }  // MF or an offset: a fragment
      let total = be16(l3 &+ 2)
      guard total >= ihl, l3 &+ total <= length else { return .failure(.truncated) }
      l4 = l3 &+ ihl
      end = l3 &+ total
      v6 = false
    } else if type == 0x86DD {
      guard readable >= l3 &+ 40 else { return .failure(.truncated) }
      guard u8(l3) >> 4 == 6 else { return .failure(.badHeader) }
      guard u8(l3 &+ 6) == 6 else { return .failure(.notTCP) }
      let payload = be16(l3 &+ 4)
      guard payload != 0 else { return .failure(.badHeader) }
      guard l3 &+ 40 &+ payload <= length else { return .failure(.truncated) }
      l4 = l3 &+ 40
      end = l3 &+ 40 &+ payload
      v6 = true
    } else {
      return .failure(.notIP)
    }
    guard end >= l4 &+ 20, l4 &+ 20 <= readable else { return .failure(.truncated) }
    let tcpHeader = (u8(l4 &+ 12) >> 4) &* 4
    guard tcpHeader >= 20 else { return .failure(.badHeader) }
    guard l4 &+ tcpHeader <= end, l4 &+ tcpHeader <= readable else { return .failure(.truncated) }
    return .success(Layout(l3: l3, l4: l4, headerLength: l4 &+ tcpHeader, payloadLength: end &- l4 &- tcpHeader,
                           isIPv6: v6, mss: mss))
  }

  /// Writes segment `i` of `layout` (from the same `frame`) to `out`; returns
  /// its length, or 0 when `i` is out of range or it does not fit `capacity`.
  public static func write(segment i: Int, of layout: Layout, from frame: UnsafeRawPointer,
                           into out: UnsafeMutableRawPointer, capacity: Int) -> Int {
    guard i >= 0, i < layout.segmentCount else { return 0 }
    let payload = layout.segmentPayload(i)
    let total = layout.headerLength &+ payload
    guard total <= capacity else { return 0 }
    // SAFETY: layout() checked headerLength + payloadLength against the frame's
    // length; i < segmentCount keeps this slice within the payload; total <= capacity.
    out.copyMemory(from: frame, byteCount: layout.headerLength)
    (out + layout.headerLength).copyMemory(from: frame + (layout.headerLength &+ i &* layout.mss), byteCount: payload)
    fixUp(segment: i, of: layout, at: out)
    return total
  }

  /// Turns the copy at `out` — the original's headers, then segment `i`'s
  /// payload (`layout.segmentLength(i)` bytes in all) — into segment `i`:
  /// lengths, IPv4 identification and header checksum, sequence number,
  /// flags and the TCP checksum (complete, not partial). For callers that
  /// gather the payload themselves (a chain).
  public static func fixUp(segment i: Int, of layout: Layout, at out: UnsafeMutableRawPointer) {
    guard i >= 0, i < layout.segmentCount else { return }
    let total = layout.segmentLength(i)
    func put16(_ at: Int, _ v: Int) {
      out.storeBytes(of: UInt8(truncatingIfNeeded: v >> 8), toByteOffset: at, as: UInt8.self)
      out.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: at &+ 1, as: UInt8.self)
    }
    func get16(_ at: Int) -> Int {
      Int(out.load(fromByteOffset: at, as: UInt8.self)) << 8 | Int(out.load(fromByteOffset: at &+ 1, as: UInt8.self))
    }
    let l3 = layout.l3, l4 = layout.l4
    let tcpLength = total &- l4
    var pseudo: UInt32
    if layout.isIPv6 {
      put16(l3 &+ 4, tcpLength)
      pseudo = UInt32(InternetChecksum.sum(out + (l3 &+ 8), 32))
    } else {
      put16(l3 &+ 2, total &- l3)
      put16(l3 &+ 4, get16(l3 &+ 4) &+ i)          // identification: one per segment, as Linux does
      put16(l3 &+ 10, 0)
      put16(l3 &+ 10, Int(~InternetChecksum.sum(out + l3, l4 &- l3)))
      pseudo = UInt32(InternetChecksum.sum(out + (l3 &+ 12), 8))
    }
    pseudo &+= 6 &+ UInt32(truncatingIfNeeded: tcpLength)
    // Sequence number: advanced by the payload before this segment (mod 2^32).
    let seq = UInt32(get16(l4 &+ 4)) << 16 | UInt32(get16(l4 &+ 6))
    let newSeq = seq &+ UInt32(truncatingIfNeeded: i &* layout.mss)
    put16(l4 &+ 4, Int(newSeq >> 16))
    put16(l4 &+ 6, Int(newSeq & 0xFFFF))
    // FIN and PSH only on the last segment, CWR only on the first.
    var flags = Int(out.load(fromByteOffset: l4 &+ 13, as: UInt8.self))
    if i != layout.segmentCount &- 1 { flags &= ~0x09 }
    if i != 0 { flags &= ~0x80 }
    out.storeBytes(of: UInt8(truncatingIfNeeded: flags), toByteOffset: l4 &+ 13, as: UInt8.self)
    put16(l4 &+ 16, 0)
    put16(l4 &+ 16, Int(~InternetChecksum.sum(out + l4, tcpLength, initial: pseudo)))
  }
}

extension TCPSegmentation {
  /// Segmentation of a packet held in pool buffers (one, or a chain whose
  /// head holds every header): `layout` reads the head only and checks the IP
  /// length against the whole packet; `write` builds each segment into any
  /// memory (a pool buffer, a TPACKET frame) from the head's headers and the
  /// payload gathered along the chain. Segments must be written in order.
  public struct PoolPacket {
    public let layout: Layout
    @usableFromInline let head: PacketBuffer
    /// Payload cursor: the segment being read and the bytes of it consumed.
    @usableFromInline var at: PacketBuffer
    @usableFromInline var used: Int

    /// The packet's whole length (every segment's data).
    public let bytes: Int

    /// Nil when the packet cannot be segmented: a segment outside its buffer,
    /// more segments than the pool has (a cycle), `layout`'s refusals,
    /// headers past the head.
    public init?(_ head: PacketBuffer, pool: borrowing BufferPool) {
      guard Int(head.index) < pool.count, Int(head.offset) &+ Int(head.length) <= pool.bufferSize else { return nil }
      var total = Int(head.length)
      var walked = 1
      var cur = head
      while let s = pool.next(after: cur) {
        guard walked < pool.count, Int(s.offset) &+ Int(s.length) <= pool.bufferSize else { return nil }
        total &+= Int(s.length)
        walked &+= 1
        cur = s
      }
      bytes = total
      let frame = UnsafeRawPointer(pool.pointer(head) + Int(head.offset))
      guard case .success(let l) = TCPSegmentation.layout(
        frame, length: total, headerBytes: Int(head.length), gsoType: head.gsoType, gsoSize: head.gsoSize)
      else { return nil }
      layout = l
      self.head = head
      at = head
      used = l.headerLength
    }

    /// Writes the next segment, `i`, into `out` (room for `layout.segmentLength(i)`);
    /// false when the chain ends early or a segment lies outside its buffer.
    public mutating func write(segment i: Int, into out: UnsafeMutableRawPointer, pool: borrowing BufferPool) -> Bool {
      let len = layout.segmentLength(i)
      // SAFETY: headerLength <= head.length (layout read the headers there); the caller gives len bytes.
      out.copyMemory(from: pool.pointer(head) + Int(head.offset), byteCount: layout.headerLength)
      var filled = layout.headerLength
      while filled < len {
        if used >= Int(at.length) {
          // init checked every segment; the IP length is within the packet: a next one exists.
          guard let n = pool.next(after: at) else { return false }
          at = n
          used = 0
          continue
        }
        let c = min(len &- filled, Int(at.length) &- used)
        // SAFETY: c bytes from `used` lie in segment `at`'s data (inside its buffer: init); filled + c <= len.
        (out + filled).copyMemory(from: pool.pointer(at) + (Int(at.offset) &+ used), byteCount: c)
        filled &+= c
        used &+= c
      }
      TCPSegmentation.fixUp(segment: i, of: layout, at: out)
      return true
    }
  }
}
