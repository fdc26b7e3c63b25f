import FuzzSupport
import VioFioVerify

// vio-fio's verify header (Sources/Tools/VioFioVerify) reading blocks it did
// not write: any bytes, any block length (the run's --bs), any offset.
//
// Checked: check() never traps or reads outside the block (ASan: the block
// is a heap allocation of exactly `length` bytes) and names a reason for
// anything it refuses; a block fill() wrote checks clean at its own offset
// and length, and is refused at another offset or after any byte covered by
// the CRC (all but the reserved bytes 28…31) changes.
//
// Input: byte 0 mode (bit 0: round trip), u64 offset, then for a check the
// block itself; for a round trip u16 length, u64 seed, u16 position, byte.

@_cdecl("LLVMFuzzerTestOneInput")
public func verifyHeaderFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(data, size)
  let roundTrip = input.bool()
  let offset = input.u64()
  if !roundTrip {
    let block = input.rest()
    let p = UnsafeMutableRawPointer.allocate(byteCount: max(block.count, 1), alignment: 8)
    defer { p.deallocate() }
    block.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: block.count) }
    if let why = VerifyHeader.check(p, length: block.count, offset: offset) {
      require(!why.isEmpty, "empty refusal")
    }
    return 0
  }
  let length = VerifyHeader.size + Int(input.u16() % 4097)
  let seed = input.u64()
  let p = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 8)
  defer { p.deallocate() }
  VerifyHeader.fill(p, length: length, offset: offset, seed: seed)
  require(VerifyHeader.check(p, length: length, offset: offset) == nil, "a block fill() wrote fails check()")
  require(VerifyHeader.check(p, length: length, offset: offset ^ 512) != nil, "a block checks clean at the wrong offset")
  let at = Int(input.u16()) % length
  let flip = input.u8() | 1
  p.storeBytes(of: p.load(fromByteOffset: at, as: UInt8.self) ^ flip, toByteOffset: at, as: UInt8.self)
  let covered = !(28..<32).contains(at)
  require(!covered || VerifyHeader.check(p, length: length, offset: offset) != nil, "byte \(at) changed, check() passed")
  return 0
}
