import FuzzSupport
import VirtioNet

// Software TCP segmentation (VirtioNet's TCPSegmentation) of frames a device
// or a peer wrote: any bytes, any gso_size.
//
// Checked: layout() never traps or reads outside the frame (ASan: the frame
// is a heap allocation of exactly its length) and either refuses or names a
// layout inside the frame; every segment write() makes fits an allocation of
// exactly segmentLength(i) bytes, carries at most mss payload bytes, the
// payload slices join into the original payload in order, each segment parses
// again as one TCP packet of that payload, and its TCP checksum (and IPv4
// header checksum) verify.
//
// Input: u16 mss, then the frame.

@_cdecl("LLVMFuzzerTestOneInput")
public func tcpSegmentFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(data, size)
  let mss = Int(input.u16())
  let bytes = input.rest()
  let frame = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
  defer { frame.deallocate() }
  bytes.withUnsafeBytes { if let b = $0.baseAddress { frame.copyMemory(from: b, byteCount: bytes.count) } }
  guard case .success(let l) = TCPSegmentation.layout(frame, length: bytes.count, mss: mss) else { return 0 }
  require(l.headerLength + l.payloadLength <= bytes.count, "layout past the frame")
  require(l.l3 < l.l4 && l.l4 + 20 <= l.headerLength, "headers out of order")
  var offset = 0
  for i in 0..<l.segmentCount {
    let n = l.segmentLength(i)
    let out = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 8)
    defer { out.deallocate() }
    require(TCPSegmentation.write(segment: i, of: l, from: frame, into: out, capacity: n) == n, "segment \(i) not written")
    let payload = n - l.headerLength
    require(payload <= mss && (payload > 0 || l.payloadLength == 0), "segment \(i): payload \(payload) for mss \(mss)")
    for j in 0..<payload {
      require(out.load(fromByteOffset: l.headerLength + j, as: UInt8.self)
              == frame.load(fromByteOffset: l.headerLength + offset + j, as: UInt8.self), "segment \(i): payload byte \(j)")
    }
    offset += payload
    guard case .success(let again) = TCPSegmentation.layout(out, length: n, mss: 65535) else {
      require(false, "segment \(i) does not parse again")
      return 0
    }
    require(again.payloadLength == payload && again.headerLength == l.headerLength, "segment \(i) reparsed differently")
    let tcpLength = n - l.l4
    var pseudo = UInt32(l.isIPv6 ? InternetChecksum.sum(out + l.l3 + 8, 32) : InternetChecksum.sum(out + l.l3 + 12, 8))
    pseudo += 6 + UInt32(tcpLength)
    require(InternetChecksum.sum(out + l.l4, tcpLength, initial: pseudo) == 0xFFFF, "segment \(i): TCP checksum")
    if !l.isIPv6 {
      require(InternetChecksum.sum(out + l.l3, l.l4 - l.l3) == 0xFFFF, "segment \(i): IPv4 header checksum")
    }
  }
  require(offset == l.payloadLength, "segments carried \(offset) of \(l.payloadLength) payload bytes")
  return 0
}
