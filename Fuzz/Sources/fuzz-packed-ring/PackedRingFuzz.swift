import FuzzSupport
import VirtioCore
import VirtioSpec

// The packed ring core (§2.8) against a device the fuzz input plays: a
// well-behaved device step (read the next available chains, write used
// descriptors with the device wrap counter, IN_ORDER batches included) mixed
// with raw writes of anything the device can reach — any descriptor with any
// id, length and AVAIL/USED/WRITE/NEXT flags, the device event suppression
// area, any byte of the ring — interleaved with the driver's add / publish /
// nextUsed / nextCompleted / interrupt hints.
//
// Checked as for the split ring: no access outside the ring, tables or shadow
// arrays (ASan); a broken queue with a reason instead of a trap; no token
// returned twice or unposted; no length above what was posted; IN_ORDER
// returns the oldest buffer first.
//
// Input: byte 0 size (1…16), byte 1 features (bit 0 EVENT_IDX, 1 INDIRECT,
// 2 IN_ORDER), byte 2 indirect table size, then operations (Fuzz/README.md).

struct PackedDevice {
  let base: UnsafeMutableRawPointer
  let layout: PackedRingLayout
  var availSlot = 0
  var availWrap = true
  var usedSlot = 0
  var usedWrap = true

  var size: Int { layout.size }
  func load16(_ o: Int) -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
  func store16(_ o: Int, _ v: UInt16) { base.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt16.self) }
  func store32(_ o: Int, _ v: UInt32) { base.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt32.self) }

  func writeDescriptor(slot: Int, len: UInt32, id: UInt16, flags: UInt16) {
    store32(slot * 16 + 8, len)
    store16(slot * 16 + 12, id)
    store16(slot * 16 + 14, flags)
  }

  static func advance(_ slot: inout Int, _ wrap: inout Bool, by n: Int, size: Int) {
    slot += n
    while slot >= size {
      slot -= size
      wrap.toggle()
    }
  }

  /// §2.8.1: used iff AVAIL == USED == the device's wrap counter.
  var usedFlags: UInt16 { usedWrap ? VirtqDescFlags.avail | VirtqDescFlags.used : 0 }

  /// Completes up to `count` available chains, each with its own used
  /// descriptor or (`batch`, IN_ORDER) one for the last, written at the first
  /// slot of the batch. Returns how many.
  mutating func complete(count: Int, batch: Bool, input: inout FuzzInput) -> Int {
    var done = 0
    var batchSlots = 0
    var lastID: UInt16 = 0
    let batchStart = usedSlot
    while done < count {
      let flags = load16(availSlot * 16 + 14)
      let avail = flags & VirtqDescFlags.avail != 0
      let used = flags & VirtqDescFlags.used != 0
      guard avail == availWrap, used != availWrap else { break }
      let id = load16(availSlot * 16 + 12)
      // §2.8.6: the chain continues while NEXT is set (never longer than the ring).
      var n = 1
      var s = availSlot
      var f = flags
      while f & VirtqDescFlags.next != 0, n < size {
        s = s + 1 == size ? 0 : s + 1
        f = load16(s * 16 + 14)
        n += 1
      }
      Self.advance(&availSlot, &availWrap, by: n, size: size)
      lastID = id
      if batch {
        batchSlots += n
      } else {
        let write = input.bool() ? VirtqDescFlags.write : 0
        writeDescriptor(slot: usedSlot, len: length(&input), id: id, flags: usedFlags | write)
        Self.advance(&usedSlot, &usedWrap, by: n, size: size)
      }
      done += 1
    }
    if batch && done > 0 {
      writeDescriptor(slot: batchStart, len: length(&input), id: lastID, flags: usedFlags | VirtqDescFlags.write)
      Self.advance(&usedSlot, &usedWrap, by: batchSlots, size: size)
    }
    return done
  }

  func length(_ input: inout FuzzInput) -> UInt32 {
    input.bool() ? input.u32() : UInt32(input.u8())
  }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func packedRingFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  RingProgram.run(PackedVirtqueue.self, PackedDevice.self, data, size) { 1 + Int($0 % 16) }
}

extension PackedDevice: RingFuzzDevice {
  static var operations: UInt8 { 4 }

  init(ring: UnsafeMutableRawPointer, size: Int) {
    self.init(base: ring, layout: PackedRingLayout(size: size)!)
  }

  mutating func step(_ kind: UInt8, _ input: inout FuzzInput, features: RingFeatures) {
    switch kind {
    case 0:
      _ = complete(count: 1 + Int(input.u8() % 4), batch: features.inOrder && input.bool(), input: &input)
    case 1:
      // Any descriptor: an id in range (low byte) or anything; flags from the
      // meaningful bits (AVAIL, USED, WRITE, NEXT, INDIRECT) or anything.
      let slot = Int(input.u16()) % layout.size
      let id = input.bool() ? input.u16() : UInt16(input.u8())
      let len = length(&input)
      let raw = input.u16()
      let flags = input.bool() ? raw : raw & (VirtqDescFlags.avail | VirtqDescFlags.used | 7)
      writeDescriptor(slot: slot, len: len, id: id, flags: flags)
    case 2:
      // Device event suppression: off_wrap and flags.
      store16(layout.deviceEventOffset, input.u16())
      store16(layout.deviceEventOffset + 2, input.bool() ? input.u16() : UInt16(input.u8() % 3))
    default:
      base.storeBytes(of: input.u8(), toByteOffset: Int(input.u16()) % layout.totalBytes, as: UInt8.self)
    }
  }
}
