import FuzzSupport
import PacketIO
import VirtioCore

// The kernel path's AF_PACKET TPACKET_V2 rings (PacketSocketQueue,
// Documentation/networking/packet_mmap.rst) with the fuzz input playing the
// kernel: RX frame headers with any tp_status, tp_len, tp_snaplen, tp_mac and
// sll_pkttype, any frame bytes (CSUMNOTREADY frames go through
// ChecksumOffsets), TX frames handed back AVAILABLE or WRONG_FORMAT.
//
// Checked: no read or write outside the rings or the pool (ASan: each ring
// is its own heap allocation); every packet received is the frame the kernel
// wrote, byte for byte, and only a frame whose data lies inside the frame,
// is whole (snaplen == len), fits a buffer and is not our own outgoing one;
// NEEDS_CSUM offsets inside the frame; no buffer lost: pool + held = all.
//
// Input: byte 0 RX frames, byte 1 TX frames, byte 2 pool shape, then
// operations (Fuzz/README.md).

let frameSize = 2048
let tpStatusUser: UInt32 = 1
let tpStatusCsumNotReady: UInt32 = 8

@_cdecl("LLVMFuzzerTestOneInput")
public func tpacketFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(data, size)
  let rxFrames = 1 + Int(input.u8() % 8)
  let txFrames = 1 + Int(input.u8() % 8)
  let shape = input.u8()
  let poolCount = 1 + Int(shape % 16)
  let bufferSize = shape & 0x80 != 0 ? 2048 : 256 + Int(shape & 0x70) * 16
  let rx = UnsafeMutableRawPointer.allocate(byteCount: rxFrames * frameSize, alignment: 4096)
  let tx = UnsafeMutableRawPointer.allocate(byteCount: txFrames * frameSize, alignment: 4096)
  rx.initializeMemory(as: UInt8.self, repeating: 0, count: rxFrames * frameSize)
  tx.initializeMemory(as: UInt8.self, repeating: 0, count: txFrames * frameSize)
  defer {
    rx.deallocate()
    tx.deallocate()
  }
  var dma = HeapDMA()
  guard var pool = try? BufferPool(count: poolCount, bufferSize: bufferSize, headroom: 64, memory: &dma) else {
    fatalError("pool of \(poolCount) × \(bufferSize) could not be built")
  }
  let room = pool.bufferSize - pool.headroom
  var q = PacketSocketQueue(simulatedRX: rx, tx: tx, frameSize: frameSize, rxFrames: rxFrames, txFrames: txFrames)
  var held: [PacketBuffer] = []
  // The kernel's side: its next RX frame, and the frames it filled that the
  // queue has not handed back yet, each with the bytes it must deliver (nil:
  // a frame it must refuse).
  var kernelIndex = 0
  var pending: [(frame: Int, expect: [UInt8]?)] = []
  var modelExact = true

  func frame(_ i: Int) -> UnsafeMutableRawPointer { rx + i * frameSize }

  var steps = 0
  while !input.isEmpty, steps < 512 {
    steps += 1
    switch input.u8() % 6 {
    case 0:
      // The kernel fills its next frame, if the queue gave it back.
      let f = frame(kernelIndex)
      guard f.load(as: UInt32.self) == 0 else { break }
      let len = input.bool() ? input.u32() : UInt32(input.u16() % 2100)
      let snap = input.bool() ? len : input.u32()
      let mac = input.bool() ? UInt16(32 + input.u8() % 64) : input.u16()
      let pkttype: UInt8 = input.bool() ? 0 : input.u8() % 8
      f.storeBytes(of: len, toByteOffset: 4, as: UInt32.self)
      f.storeBytes(of: snap, toByteOffset: 8, as: UInt32.self)
      f.storeBytes(of: mac, toByteOffset: 12, as: UInt16.self)
      f.storeBytes(of: pkttype, toByteOffset: 32 + 10, as: UInt8.self)
      var bytes: [UInt8] = []
      if Int(mac) + Int(snap) <= frameSize {
        bytes = input.bytes(min(Int(snap), 96))
        for (i, b) in bytes.enumerated() { f.storeBytes(of: b, toByteOffset: Int(mac) + i, as: UInt8.self) }
      }
      // The data may overlap the header (tp_mac < 52): judge the frame by what it holds now.
      let hLen = f.load(fromByteOffset: 4, as: UInt32.self)
      let hSnap = f.load(fromByteOffset: 8, as: UInt32.self)
      let hMac = Int(f.load(fromByteOffset: 12, as: UInt16.self))
      let hType = f.load(fromByteOffset: 32 + 10, as: UInt8.self)
      let valid = hType != 4 && hMac >= 32 && hSnap > 0 && hSnap == hLen && hMac + Int(hSnap) <= frameSize && Int(hSnap) <= room
      let expect = valid ? Array(UnsafeRawBufferPointer(start: f + hMac, count: Int(hSnap))) : nil
      pending.append((kernelIndex, expect))
      f.storeBytes(of: tpStatusUser | (input.bool() ? tpStatusCsumNotReady : 0), as: UInt32.self)
      kernelIndex = kernelIndex + 1 == rxFrames ? 0 : kernelIndex + 1
    case 1:
      // Any header field of any frame, any status (the model of what is owed stops being exact).
      let f = frame(Int(input.u8()) % rxFrames)
      f.storeBytes(of: input.u32(), toByteOffset: Int(input.u8() % 4) * 4, as: UInt32.self)
      modelExact = false
    case 2:
      var burst = [PacketBuffer](repeating: PacketBuffer(index: 0, offset: 0, length: 0), count: 1 + Int(input.u8() % 8))
      var span = burst.mutableSpan
      let n = q.receive(into: &span, pool: &pool)
      var next = 0
      // Frames handed back (status KERNEL again), in ring order.
      while modelExact, let first = pending.first, frame(first.frame).load(as: UInt32.self) == 0 {
        pending.removeFirst()
        guard let expect = first.expect else { continue }
        require(next < n, "frame \(first.frame) was valid but no packet came out of it")
        let b = burst[next]
        let got = Array(UnsafeRawBufferPointer(start: pool.pointer(b) + Int(b.offset), count: Int(b.length)))
        require(got == expect, "packet \(next) differs from frame \(first.frame)'s \(expect.count) bytes")
        next += 1
      }
      require(!modelExact || next == n, "\(n) packets received, \(next) valid frames handed back")
      for i in 0..<n {
        let b = burst[i]
        require(Int(b.index) < pool.count, "buffer index \(b.index)")
        require(b.length > 0 && Int(b.offset) + Int(b.length) <= pool.bufferSize, "packet \(b.offset)+\(b.length) past its buffer")
        if b.flags & PacketBuffer.needsChecksum != 0 {
          require(Int(b.csumStart) + Int(b.csumOffset) + 2 <= Int(b.length), "checksum field outside the frame")
        }
        held.append(b)
      }
    case 3:
      let n = q.transmit(held.span, pool: &pool)
      held.removeFirst(n)
    case 4:
      // The kernel sends what was requested: AVAILABLE, or WRONG_FORMAT now and then.
      for i in 0..<txFrames {
        let f = tx + i * frameSize
        if f.load(as: UInt32.self) == 1 {
          require(Int(f.load(fromByteOffset: 4, as: UInt32.self)) <= frameSize - 32, "TX frame longer than its slot")
          f.storeBytes(of: input.u8() < 16 ? UInt32(4) : 0, as: UInt32.self)
        }
      }
    default:
      for b in held { pool.release(b) }
      held.removeAll()
    }
    require(pool.available + held.count == pool.count, "\(pool.available) free + \(held.count) held != \(pool.count)")
  }
  return 0
}
