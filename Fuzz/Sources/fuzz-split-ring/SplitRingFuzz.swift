import FuzzSupport
import VirtioCore
import VirtioSpec

// The split ring core (§2.7) against a device the fuzz input plays: a
// well-behaved device step (take the next available heads, write used
// entries, IN_ORDER batches included) mixed with raw writes of anything the
// device can reach — used entries with any id and length, any used index,
// used flags, avail_event, any byte of the ring area — interleaved with the
// driver's add / publish / nextUsed / nextCompleted / interrupt hints.
//
// Checked: no access outside the ring, tables or shadow arrays (ASan); a
// violation ends in a broken queue with a reason, never a trap; no token
// returned twice or without having been posted; no length above what was
// posted; IN_ORDER returns the oldest buffer first (RingOracle).
//
// Input: byte 0 size (1…32), byte 1 features (bit 0 EVENT_IDX, 1 INDIRECT,
// 2 IN_ORDER), byte 2 indirect table size, then operations (Fuzz/README.md).

@_cdecl("LLVMFuzzerTestOneInput")
public func splitRingFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  RingProgram.run(SplitVirtqueue.self, SplitDevice.self, data, size) { 1 << Int($0 % 6) }
}

extension SplitDevice: RingFuzzDevice {
  public static var operations: UInt8 { 5 }

  public mutating func step(_ kind: UInt8, _ input: inout FuzzInput, features: RingFeatures) {
    switch kind {
    case 0:
      _ = complete(count: 1 + Int(input.u8() % 4), batch: features.inOrder && input.bool(), input: &input)
    case 1:
      // Any used entry: an id in range (low byte) or anything.
      let at = input.u16()
      let id = input.bool() ? input.u32() : UInt32(input.u8())
      writeUsed(at: at, id: id, len: length(&input))
    case 2:
      // Any used index: near the device's own, or anything.
      publishUsed(input.bool() ? usedIdx &+ UInt16(input.u8()) : input.u16())
    case 3:
      // Any byte of the ring area (the device can write all of it).
      base.storeBytes(of: input.u8(), toByteOffset: Int(input.u16()) % layout.totalBytes, as: UInt8.self)
    default:
      let v = input.u16()
      if input.bool() {
        store16(layout.usedOffset + layout.availEventOffset, v)
      } else {
        store16(layout.usedOffset + SplitRingLayout.usedFlagsOffset, v)
      }
    }
  }
}
