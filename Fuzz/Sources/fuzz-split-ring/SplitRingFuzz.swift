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
  var input = FuzzInput(data, size)
  let queueSize = 1 << Int(input.u8() % 6)
  let f = input.u8()
  let features = RingFeatures(eventIdx: f & 1 != 0, indirect: f & 2 != 0, inOrder: f & 4 != 0)
  let maxIndirect = Int(input.u8() % 9)
  var dma = HeapDMA()
  guard var q = try? SplitVirtqueue(index: 0, size: queueSize, features: features, memory: &dma, maxIndirect: maxIndirect)
  else { fatalError("split queue of \(queueSize) could not be built") }
  let layout = SplitRingLayout(size: queueSize)!
  var device = SplitDevice(ring: q.descAreaIOVA.heapPointer, size: queueSize)
  var oracle = RingOracle(inOrder: features.inOrder)

  var steps = 0
  while !input.isEmpty, steps < 4096 {
    steps += 1
    let op = input.u8() % 12
    switch op {
    case 0...5:
      DriverStep.run(op, &q, &input, &oracle)
    case 6:
      _ = device.complete(count: 1 + Int(input.u8() % 4), batch: features.inOrder && input.bool(), input: &input)
    case 7:
      // Any used entry: an id in range (low byte) or anything.
      let at = input.u16()
      let id = input.bool() ? input.u32() : UInt32(input.u8())
      device.writeUsed(at: at, id: id, len: device.length(&input))
    case 8:
      // Any used index: near the device's own, or anything.
      let idx = input.bool() ? device.usedIdx &+ UInt16(input.u8()) : input.u16()
      device.publishUsed(idx)
    case 9:
      // Any byte of the ring area (the device can write all of it).
      device.base.storeBytes(of: input.u8(), toByteOffset: Int(input.u16()) % layout.totalBytes, as: UInt8.self)
    case 10:
      let v = input.u16()
      if input.bool() {
        device.store16(layout.usedOffset + layout.availEventOffset, v)
      } else {
        device.store16(layout.usedOffset + SplitRingLayout.usedFlagsOffset, v)
      }
    default:
      if input.u8() < 4 {
        q.markBroken(.deviceStalled)
        require(q.brokenReason != nil, "markBroken left no reason")
      }
    }
  }
  // Drain: whatever the device left published must come back or break the queue.
  var polls = 0
  while polls < 2 * queueSize + 2, DriverStep.poll(q.nextUsed(), q: q, oracle: &oracle) { polls += 1 }
  return 0
}
