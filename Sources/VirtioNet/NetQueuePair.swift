import VirtioCore
import VirtioSpec

/// One receive queue and one transmit queue of a virtio-net device, driven by
/// one thread: bursts in, bursts out, buffers from a `BufferPool` by value.
///
/// Every buffer carries the 12-byte virtio_net_hdr_v1 (§5.1.6) in its headroom,
/// right before the data, so a received buffer can be transmitted as is (zero
/// copy): the RX header is overwritten by the TX header in place.
///
/// Hot path (`receive`, `transmit`, `reclaim`, `refill`): no allocation, no
/// reference counting, no existential, no throw; every value the device wrote
/// (used id and length: the ring core; header flags and num_buffers: here) is
/// checked before it is used.
public struct NetQueuePair<RX: Virtqueue & ~Copyable, TX: Virtqueue & ~Copyable>: ~Copyable {
  public var rx: RX
  public var tx: TX
  public var stats = NetQueueStats()
  @usableFromInline let rxDoorbell: Doorbell
  @usableFromInline let txDoorbell: Doorbell
  /// VIRTIO_NET_F_MRG_RXBUF: the header's num_buffers is meaningful (§5.1.6.4).
  @usableFromInline let mergeable: Bool
  /// VIRTIO_NET_F_CSUM: the device completes checksums the driver leaves partial (§5.1.6.2).
  @usableFromInline let txChecksum: Bool
  /// VIRTIO_NET_F_GUEST_CSUM: the device may hand over partial checksums / vouch for them (§5.1.6.4).
  @usableFromInline let rxChecksum: Bool
  /// Refill the RX ring once this many slots are free (one doorbell per batch).
  @usableFromInline let refillBatch: Int
  /// MRG_RXBUF: continuation buffers of a dropped multi-buffer frame still to skip.
  @usableFromInline var rxSkip: Int = 0
  /// The last refill ran out of pool buffers (counted once per episode).
  @usableFromInline var rxStarved = false

  /// §5.1.6: with VERSION_1 the header is virtio_net_hdr_v1 (12 bytes).
  public static var headerSize: Int { 12 }
  /// This pair's header: 12 bytes, or virtio_net_hdr_v1_hash (20) with
  /// HASH_REPORT, in both directions (§5.1.6).
  public let headerSize: Int
  /// VIRTIO_NET_F_HASH_REPORT: each received header carries hash_value and
  /// hash_report (§5.1.6.4.3); packets are marked so `BufferPool.receiveHash` reads them.
  @usableFromInline let hashReport: Bool

  /// A pair over two configured queues. Interrupts start disabled on both
  /// (polling); `armReceiveInterrupt` asks for the next RX one.
  public init(
    rx: consuming RX, tx: consuming TX, rxDoorbell: Doorbell, txDoorbell: Doorbell, features: FeatureSet
  ) {
    self.rx = rx
    self.tx = tx
    self.rxDoorbell = rxDoorbell
    self.txDoorbell = txDoorbell
    self.mergeable = features.contains(bit: NetFeature.mrgRxbuf)
    self.txChecksum = features.contains(bit: NetFeature.csum)
    self.rxChecksum = features.contains(bit: NetFeature.guestCsum)
    self.hashReport = features.contains(bit: NetFeature.hashReport)
    self.headerSize = hashReport ? VirtioNetHdrHash.size : Self.headerSize
    self.refillBatch = max(1, min(32, self.rx.size / 8))
    self.rx.disableInterrupts()
    // TX completions are reclaimed by polling in `transmit`: never interrupt for them.
    self.tx.disableInterrupts()
  }

  @inlinable static func token(_ b: PacketBuffer) -> UInt64 { UInt64(b.index) | UInt64(b.offset) << 32 }
  @inlinable static func buffer(_ token: UInt64) -> PacketBuffer {
    PacketBuffer(index: UInt32(truncatingIfNeeded: token), offset: UInt16(truncatingIfNeeded: token >> 32), length: 0)
  }

  /// Why the pair stopped working, when one of its queues broke (the device
  /// wrote something it never could have; see `BrokenReason`).
  public var brokenReason: BrokenReason? { rx.brokenReason ?? tx.brokenReason }

  // MARK: receive (§5.1.6.3, §5.1.6.4)

  /// Fills the RX ring from `pool` (§5.1.6.3.1: the driver should keep the
  /// receive queue populated; each buffer holds a whole frame, so no frame
  /// needs MRG_RXBUF). One publish and at most one doorbell. Returns how many
  /// buffers were posted.
  @inlinable @discardableResult
  public mutating func refill(_ pool: inout BufferPool) -> Int {
    // Each buffer takes one descriptor / slot and all have the same shape:
    // the room and the segment's offset and length are computed once.
    let want = rx.freeCount
    let offset = UInt16(truncatingIfNeeded: pool.headroom)
    // The device writes header + frame from `offset - headerSize` to the end of the buffer.
    let start = pool.headroom &- headerSize
    let length = UInt32(truncatingIfNeeded: pool.bufferSize &- start)
    // A buffer is taken from the pool only when the ring has room for it.
    var handed = 0
    var last = PacketBuffer(index: 0, offset: 0, length: 0)
    let posted = rx.add(upTo: want) {
      guard var b = pool.allocate() else { return nil }
      b.offset = offset
      handed &+= 1
      last = b
      return (.writable(pool.iova(b) &+ UInt64(start), length), Self.token(b))
    }
    // Not posted (a 0-byte buffer, which this pool's shape never gives): back to the pool.
    if handed > posted { pool.release(last) }
    if posted < want && pool.available == 0 {
      if !rxStarved { stats.rxNoBuffers &+= 1 }
      rxStarved = true
    }
    if rx.freeCount == 0 { rxStarved = false }
    // §2.7.13.3 / §2.8.21.1: publish, then notify only when the device asked (EVENT_IDX / NO_NOTIFY).
    if posted > 0 && rx.publish() {
      rxDoorbell.ring(rx.notificationValue)
      stats.notifications &+= 1
    }
    return posted
  }

  /// Takes up to `burst.count` received packets into `burst`; returns how many.
  /// The caller owns them (transmit them or release them to the pool). Refills
  /// the ring in batches.
  @inlinable public mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool) -> Int {
    // One branch per burst; each body is compiled with its header size as a
    // constant, so the 12-byte path costs what it did before HASH_REPORT.
    hashReport
      ? receive(into: &burst, pool: &pool, headerSize: VirtioNetHdrHash.size, hashReport: true)
      : receive(into: &burst, pool: &pool, headerSize: Self.headerSize, hashReport: false)
  }

  @inlinable @inline(__always)
  mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool, headerSize: Int, hashReport: Bool) -> Int {
    let capacity = burst.count
    var n = 0
    var bytes: UInt64 = 0
    while n < capacity {
      guard case .used(let used) = rx.nextUsed() else { break }
      var b = Self.buffer(used.token)
      if rxSkip > 0 {
        // The rest of a frame dropped below: these buffers hold frame data, not a header.
        rxSkip &-= 1
        pool.release(b)
        continue
      }
      // The ring core checked used.length <= what was posted (the whole buffer).
      let len = Int(used.length)
      guard len >= headerSize else {
        stats.rxErrors &+= 1
        pool.release(b)
        continue
      }
      // SAFETY: the header lies in the buffer's headroom (offset >= headerSize), inside the pool's region.
      // It is read only for a feature that gives it meaning: without MRG_RXBUF
      // and GUEST_CSUM the frame's cache lines stay the device's.
      let header = pool.pointer(b) + (Int(b.offset) &- headerSize)
      if mergeable {
        // §5.1.6.4: num_buffers buffers hold this frame. Ours hold a whole frame
        // each, so a device using more is dropped (with its continuation
        // buffers), counted; a value the ring cannot hold is capped.
        let numBuffers = Int(UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 10, as: UInt16.self)))
        if numBuffers != 1 {
          stats.rxErrors &+= 1
          pool.release(b)
          rxSkip = min(max(numBuffers &- 1, 0), rx.size &- 1)
          continue
        }
      }
      let dataLength = len &- headerSize
      b.length = UInt16(truncatingIfNeeded: dataLength)
      // §5.1.6.4.3: hash_value / hash_report stay in the headroom, read only when asked for.
      if hashReport { b.flags = PacketBuffer.hashReported }
      if rxChecksum {
        let flags = header.load(fromByteOffset: 0, as: UInt8.self)
        // §5.1.6.4.1: DATA_VALID — the device checked it; NEEDS_CSUM — only a
        // partial checksum, complete it from csum_start (kept as metadata).
        if flags & VirtioNetHdr.flagDataValid != 0 { b.flags |= PacketBuffer.checksumValid }
        if flags & VirtioNetHdr.flagNeedsCsum != 0 {
          let start = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
          let offset = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
          // Device-written offsets: only kept when the checksum field lies inside the frame.
          if Int(start) &+ Int(offset) &+ 2 <= dataLength {
            b.flags |= PacketBuffer.needsChecksum
            b.csumStart = start
            b.csumOffset = offset
          } else {
            stats.rxErrors &+= 1
            pool.release(b)
            continue
          }
        }
      }
      burst[n] = b
      n &+= 1
      bytes &+= UInt64(dataLength)
    }
    // An empty poll (most polls of an idle port) stores nothing.
    if n > 0 {
      stats.rxPackets &+= UInt64(n)
      stats.rxBytes &+= bytes
    }
    if rx.freeCount >= refillBatch { refill(&pool) }
    return n
  }

  // MARK: transmit (§5.1.6.2)

  /// Returns every finished TX buffer to the pool; returns how many.
  @inlinable @discardableResult
  public mutating func reclaim(_ pool: inout BufferPool) -> Int {
    var n = 0
    // The used length of a sent buffer means nothing: the ring may skip reading it.
    while case .used(let used) = tx.nextCompleted() {
      pool.release(Self.buffer(used.token))
      n &+= 1
    }
    return n
  }

  /// Queues the packets of `burst` in order; returns how many it took (the
  /// rest stay the caller's: retry or release them). Stops at the first packet
  /// it cannot take: ring full (`txRingFull`) or a malformed handle
  /// (`txErrors`). Reclaims finished buffers first; one doorbell at most.
  @inlinable public mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool) -> Int {
    hashReport
      ? transmit(burst, pool: &pool, headerSize: VirtioNetHdrHash.size, hashReport: true)
      : transmit(burst, pool: &pool, headerSize: Self.headerSize, hashReport: false)
  }

  @inlinable @inline(__always)
  mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool, headerSize: Int, hashReport: Bool) -> Int {
    reclaim(&pool)
    var bytes: UInt64 = 0
    let count = burst.count
    // Each packet takes one descriptor (split) or one slot (packed): the room
    // is checked once per burst, not per packet.
    let room = min(count, tx.freeCount)
    var malformed = false
    var handed = 0
    var lastLength = 0
    let n = tx.add(upTo: room) {
      let b = burst[handed]
      let start = Int(b.offset) &- headerSize
      // The handle is the caller's: check it names a whole packet inside one
      // buffer of this pool with room for the header, so nothing outside it is written.
      guard Int(b.index) < pool.count, start >= 0, b.length > 0, Int(b.offset) &+ Int(b.length) <= pool.bufferSize else {
        malformed = true
        return nil
      }
      let base = pool.pointer(b)
      // §5.1.6.2: virtio_net_hdr_v1 in front of the frame, written as two
      // little-endian words (flags, gso_type, hdr_len, gso_size, csum_start |
      // csum_offset, num_buffers): all zero but for a partial checksum, which
      // goes to the device with CSUM, else is completed here.
      var word0: UInt64 = 0
      var word1: UInt32 = 0
      if b.flags & PacketBuffer.needsChecksum != 0 {
        if txChecksum {
          word0 = UInt64(VirtioNetHdr.flagNeedsCsum) | UInt64(b.csumStart) << 48
          word1 = UInt32(b.csumOffset)
        } else {
          InternetChecksum.complete(data: base + Int(b.offset), length: Int(b.length), start: Int(b.csumStart), offset: Int(b.csumOffset))
        }
      }
      // SAFETY: start >= 0 and start + headerSize <= offset: the header lies in the buffer's headroom.
      (base + start).storeBytes(of: word0.littleEndian, as: UInt64.self)
      (base + start).storeBytes(of: word1.littleEndian, toByteOffset: 8, as: UInt32.self)
      // virtio_net_hdr_v1_hash: hash_value, hash_report and padding are the device's to fill; zero on transmit.
      if hashReport { (base + start).storeBytes(of: UInt64(0), toByteOffset: 12, as: UInt64.self) }
      handed &+= 1
      lastLength = Int(b.length)
      bytes &+= UInt64(b.length)
      return (.readable(pool.iova(b) &+ UInt64(start), UInt32(Int(b.length) &+ headerSize)), Self.token(b))
    }
    // A packet handed over but not posted (a 0-byte segment, which a checked
    // handle never makes) stays the caller's; fewer than there was room for
    // with no malformed handle: the queue is broken — both are errors.
    if handed > n {
      bytes &-= UInt64(lastLength)
      malformed = true
    }
    if n < room && !malformed && tx.brokenReason != nil { malformed = true }
    if malformed {
      stats.txErrors &+= 1
    } else if n < count {
      stats.txRingFull &+= UInt64(count &- n)
    }
    stats.txPackets &+= UInt64(n)
    stats.txBytes &+= bytes
    if n > 0 && tx.publish() {
      txDoorbell.ring(tx.notificationValue)
      stats.notifications &+= 1
    }
    return n
  }

  // MARK: interrupts (§2.7.7 / §2.8.10)

  /// Asks the device for an interrupt at the next received packet. Returns
  /// true when packets are already waiting: receive again instead of sleeping.
  @inlinable public mutating func armReceiveInterrupt() -> Bool { rx.enableInterrupts() }

  /// Back to polling: asks the device not to interrupt for received packets.
  @inlinable public mutating func disarmReceiveInterrupt() { rx.disableInterrupts() }
}
