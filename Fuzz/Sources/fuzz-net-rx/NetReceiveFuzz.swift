import FuzzSupport
import PacketIO
import VirtioCore
import VirtioNet
import VirtioSpec

// virtio-net's receive path (§5.1.6.3–4) against a device the fuzz input
// plays: for each receive buffer it writes any virtio_net_hdr_v1 (flags,
// csum_start, csum_offset, num_buffers) and frame bytes, and reports any used
// length; NetQueuePair.receive takes the frames, PacketIO's ChecksumOffsets
// (the AF_PACKET path's CSUMNOTREADY parser) re-reads the frame's Ethernet /
// 802.1Q / IPv4 / IPv6 / TCP / UDP headers, and transmit on a device without
// CSUM completes the partial checksum in software at the device's offsets.
//
// With MRG_RXBUF the header's num_buffers makes the following buffers one
// frame (§5.1.6.4): they come out as one chain, held chains are transmitted
// as descriptor chains and return to the pool whole. With GUEST_TSO4/6 the
// header's gso_type / gso_size / hdr_len are checked (§5.1.6.4.1) and kept
// in the handle; transmitting such a packet passes it to the device
// (HOST_TSO4 and CSUM) or cuts it in software (TCPSegmentation over the chain).
//
// Checked: no read or write outside the pool (ASan); every received handle,
// every segment of a chain, lies inside its buffer; a NEEDS_CSUM handle's
// checksum field lies inside the frame; a GSO handle names a negotiated
// gso_type and an MSS; no buffer lost or duplicated: pool + rings + a frame
// being assembled + held = all.
//
// Input: byte 0 features (bit 0 MRG_RXBUF, 1 GUEST_CSUM, 2 IN_ORDER,
// 3 GUEST_TSO4/6, 4 GUEST_ECN, 5 CSUM + HOST_TSO4), byte 1
// pool size, then operations (Fuzz/README.md).

@_cdecl("LLVMFuzzerTestOneInput")
public func netReceiveFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(data, size)
  let f = input.u8()
  var features = FeatureSet()
  if f & 1 != 0 { features = features.union(FeatureSet(bit: NetFeature.mrgRxbuf)) }
  if f & 2 != 0 { features = features.union(FeatureSet(bit: NetFeature.guestCsum)) }
  if f & 8 != 0 { features = features.union(FeatureSet(bits: [NetFeature.guestTSO4, NetFeature.guestTSO6])) }
  if f & 16 != 0 { features = features.union(FeatureSet(bit: NetFeature.guestECN)) }
  if f & 32 != 0 { features = features.union(FeatureSet(bits: [NetFeature.csum, NetFeature.hostTSO4])) }
  let offloads = NetOffloads(features: features)
  let ring = RingFeatures(inOrder: f & 4 != 0)
  let poolCount = 2 + Int(input.u8() % 30)
  let queueSize = 8
  var dma = HeapDMA()
  guard var pool = try? BufferPool(count: poolCount, bufferSize: 2048, headroom: 64, memory: &dma),
    let rxq = try? SplitVirtqueue(index: 0, size: queueSize, features: ring, memory: &dma),
    let txq = try? SplitVirtqueue(index: 1, size: queueSize, features: ring, memory: &dma)
  else { fatalError("net queue pair could not be built") }
  var rxDevice = SplitDevice(ring: rxq.descAreaIOVA.heapPointer, size: queueSize)
  var txDevice = SplitDevice(ring: txq.descAreaIOVA.heapPointer, size: queueSize)
  var pair = NetQueuePair(rx: rxq, tx: txq, rxDoorbell: .none, txDoorbell: .none, features: features)
  pair.refill(&pool)
  var held: [PacketBuffer] = []
  /// Buffers of the packets transmitted and not yet reclaimed (chains count each segment).
  var transmitting = 0
  func segments(_ b: PacketBuffer, _ pool: borrowing BufferPool) -> Int { pool.packetSize(b).segments }

  func checkHandle(_ b: PacketBuffer, _ pool: borrowing BufferPool, _ what: String) {
    require(Int(b.index) < pool.count, "\(what): buffer index \(b.index) outside the pool of \(pool.count)")
    require(Int(b.offset) >= NetQueuePair<SplitVirtqueue, SplitVirtqueue>.headerSize, "\(what): offset \(b.offset) leaves no header room")
    require(Int(b.offset) + Int(b.length) <= pool.bufferSize, "\(what): \(b.offset)+\(b.length) past the \(pool.bufferSize)-byte buffer")
    let (count, bytes) = pool.packetSize(b)
    require(count <= pool.count, "\(what): a chain of \(count) buffers from a pool of \(pool.count)")
    if b.flags & PacketBuffer.needsChecksum != 0 {
      require(
        Int(b.csumStart) + Int(b.csumOffset) + 2 <= bytes,
        "\(what): checksum field at \(b.csumStart)+\(b.csumOffset) outside the \(bytes)-byte frame")
    }
    if b.gsoType != 0 {
      let type = b.gsoType & ~VirtioNetHdr.gsoECN
      require(offloads.rxGSOMask >> type & 1 == 1 && type != 0, "\(what): gso_type \(b.gsoType) not negotiated (\(offloads))")
      require(b.gsoType == type || offloads.rxECN, "\(what): the ECN bit without GUEST_ECN")
      require(b.gsoSize > 0, "\(what): gso_size 0")
    }
    var cur = b
    while let s = pool.next(after: cur) {
      require(Int(s.index) < pool.count && Int(s.offset) + Int(s.length) <= pool.bufferSize && s.length > 0, "\(what): segment \(s) outside its buffer")
      cur = s
    }
  }

  var steps = 0
  while !input.isEmpty, steps < 512 {
    steps += 1
    switch input.u8() % 6 {
    case 0:
      // The device fills the next receive buffer: header, frame, used length.
      guard let head = rxDevice.nextAvail() else { break }
      let d = rxDevice.descriptor(head)
      let p = d.addr.heapPointer
      let header = input.bytes(12)
      for (i, byte) in header.enumerated() { p.storeBytes(of: byte, toByteOffset: i, as: UInt8.self) }
      let frameLength = Int(input.u16()) % (Int(d.len) - 12 + 1)
      let frame = input.bytes(min(frameLength, 128))
      for (i, byte) in frame.enumerated() { p.storeBytes(of: byte, toByteOffset: 12 + i, as: UInt8.self) }
      let used = input.bool() ? input.u32() : UInt32(12 + frameLength)
      rxDevice.writeUsed(at: rxDevice.usedIdx, id: UInt32(head), len: used)
      rxDevice.usedIdx &+= 1
      rxDevice.publishUsed(rxDevice.usedIdx)
    case 1:
      var burst = [PacketBuffer](repeating: PacketBuffer(index: 0, offset: 0, length: 0), count: 1 + Int(input.u8() % 8))
      var span = burst.mutableSpan
      let n = pair.receive(into: &span, pool: &pool)
      for i in 0..<n {
        var b = burst[i]
        checkHandle(b, pool, "received")
        if input.bool() {
          // As the AF_PACKET path does for a CSUMNOTREADY frame.
          // (a chain keeps its mark: its buffers stay linked to the head).
          b.flags &= PacketBuffer.chained | PacketBuffer.segmented
          ChecksumOffsets.mark(&b, pool: pool)
          checkHandle(b, pool, "ChecksumOffsets")
        }
        held.append(b)
      }
    case 2:
      // Forward what is held (software checksum completion without CSUM; GSO
      // packets passed on with HOST_TSO4, else segmented: the original goes
      // back to the pool, fresh buffers to the ring). What left the held set
      // and did not come back to the pool, and what the pool gave, is in flight.
      let heldBefore = held.reduce(0) { $0 + segments($1, pool) }
      let poolBefore = pool.available
      let n = pair.transmit(held.span, pool: &pool)
      held.removeFirst(n)
      let heldAfter = held.reduce(0) { $0 + segments($1, pool) }
      transmitting += heldBefore - heldAfter + poolBefore - pool.available
    case 3:
      for b in held { pool.release(b) }
      held.removeAll()
    case 4:
      // The TX device sends everything it was given.
      while let head = txDevice.nextAvail() {
        txDevice.writeUsed(at: txDevice.usedIdx, id: UInt32(head), len: 0)
        txDevice.usedIdx &+= 1
      }
      txDevice.publishUsed(txDevice.usedIdx)
      pair.reclaim(&pool)
      // Every chain the device held came back.
      if pair.brokenReason == nil { transmitting = 0 }
    default:
      pair.refill(&pool)
    }
    if pair.brokenReason == nil {
      var heldBuffers = 0
      for b in held { heldBuffers += segments(b, pool) }
      let assembling = pair.assemblingBuffers(pool)
      let total = pool.available + pair.rx.inFlight + assembling + transmitting + heldBuffers
      require(
        total == pool.count,
        "buffers: \(pool.available) free + \(pair.rx.inFlight) rx + \(assembling) assembling + \(transmitting) tx + \(heldBuffers) held != \(pool.count)")
    }
  }
  return 0
}
