import VirtioCore
import VirtioSpec

/// One receive queue and one transmit queue of a virtio-net device, driven by
/// one thread: bursts in, bursts out, buffers from a `BufferPool` by value.
///
/// Every buffer carries the virtio_net_hdr (§5.1.6; 12 bytes, 20 with HASH_REPORT) in its headroom,
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
  /// A received header means something: MRG_RXBUF or GUEST_CSUM (HASH_REPORT
  /// has its own receive body). Without them the one-buffer loop makes one test.
  @usableFromInline let readsHeader: Bool
  /// VIRTIO_NET_F_CSUM: the device completes checksums the driver leaves partial (§5.1.6.2).
  @usableFromInline let txChecksum: Bool
  /// VIRTIO_NET_F_GUEST_CSUM: the device may hand over partial checksums / vouch for them (§5.1.6.4).
  @usableFromInline let rxChecksum: Bool
  /// The gso_types (one bit per value, `NetOffloads.mask`) the device may
  /// hand over (GUEST_TSO4/6) and will segment (HOST_TSO4/6); the ECN bit's
  /// too (GUEST_ECN / HOST_ECN).
  @usableFromInline let rxGSOMask: UInt8
  @usableFromInline let rxECN: Bool
  @usableFromInline let txGSOMask: UInt8
  @usableFromInline let txECN: Bool
  /// MRG_RXBUF: the hdr_len of the GSO frame being assembled, checked against its whole length.
  @usableFromInline var rxHeaderHint: Int = 0
  /// Refill the RX ring once this many slots are free (one doorbell per batch; `NetQueuePolicy`).
  @usableFromInline let refillBatch: Int
  /// `transmit` reclaims only below this many free TX slots (Int.max: every call; `NetQueuePolicy`).
  @usableFromInline let txReclaimBelow: Int
  /// Packets per TX doorbell (1: every call that posts; `NetQueuePolicy`).
  @usableFromInline let txKickBatch: Int
  /// Either of the two above is not the default: `transmit` takes its paced copy.
  @usableFromInline let txPaced: Bool
  /// txKickBatch > 1: packets published since the last TX doorbell, and whether the device asked for one since.
  @usableFromInline var txUnkicked: Int = 0
  @usableFromInline var txKickOwed = false
  /// The policy the pair was made with, as given (the fields above hold its values clamped to the rings).
  public let policy: NetQueuePolicy
  /// MRG_RXBUF: buffers of the current multi-buffer frame still to come —
  /// skipped when `rxDropping` (the frame was dropped), else joined to it.
  /// One field, so the one-buffer path makes one test.
  @usableFromInline var rxFollowing: Int = 0
  @usableFromInline var rxDropping = false
  /// MRG_RXBUF: the frame being assembled (head, last segment, bytes so
  /// far), carried across bursts.
  @usableFromInline var rxHead = PacketBuffer(index: 0, offset: 0, length: 0)
  @usableFromInline var rxTail = PacketBuffer(index: 0, offset: 0, length: 0)
  @usableFromInline var rxChainBytes: Int = 0
  /// Bytes of the virtio_net_hdr in front of every frame: 12, or
  /// virtio_net_hdr_v1_hash (20) with HASH_REPORT, in both directions
  /// (§5.1.6). The one-buffer receive and transmit loops are compiled once per
  /// length with it as a constant (reading this field there cost ~20
  /// instructions per packet, docs/PERFORMANCE.md).
  public let headerLength: Int
  /// VIRTIO_NET_F_HASH_REPORT: each received header carries hash_value and
  /// hash_report (§5.1.6.4.3); packets are marked so `BufferPool.receiveHash` reads them.
  @usableFromInline let hashReport: Bool
  /// The last refill ran out of pool buffers (counted once per episode).
  @usableFromInline var rxStarved = false
  /// Consecutive `transmit` calls that found the TX ring full, completed
  /// nothing and posted nothing (`nudgeStalledTransmit`).
  @usableFromInline var txStalledCalls: UInt32 = 0
  /// After this many, the device is notified though it did not ask.
  public static var stallNotifyCalls: UInt32 { 64 }

  /// §5.1.6: with VERSION_1 the header is virtio_net_hdr_v1 (12 bytes).
  public static var headerSize: Int { 12 }

  /// A pair over two configured queues. Interrupts start disabled on both
  /// (polling); `armReceiveInterrupt` asks for the next RX one. `policy`:
  /// refill, reclaim and doorbell pacing (`NetQueuePolicy`; the default is the measured one).
  public init(
    rx: consuming RX, tx: consuming TX, rxDoorbell: Doorbell, txDoorbell: Doorbell, features: FeatureSet,
    policy: NetQueuePolicy = .standard
  ) {
    self.rx = rx
    self.tx = tx
    self.rxDoorbell = rxDoorbell
    self.txDoorbell = txDoorbell
    self.mergeable = features.contains(bit: NetFeature.mrgRxbuf)
    self.txChecksum = features.contains(bit: NetFeature.csum)
    self.rxChecksum = features.contains(bit: NetFeature.guestCsum)
    self.readsHeader = mergeable || rxChecksum
    let offloads = NetOffloads(features: features)
    self.rxGSOMask = offloads.rxGSOMask
    self.rxECN = offloads.rxECN
    self.txGSOMask = offloads.txGSOMask
    self.txECN = offloads.txECN
    self.refillBatch = policy.refillThreshold(ringSize: self.rx.size)
    self.txReclaimBelow = policy.reclaimBelow(ringSize: self.tx.size)
    self.txKickBatch = policy.kickBatch(ringSize: self.tx.size)
    self.txPaced = txReclaimBelow != Int.max || txKickBatch != 1
    self.policy = policy
    self.hashReport = features.contains(bit: NetFeature.hashReport)
    self.headerLength = hashReport ? VirtioNetHdrHash.size : Self.headerSize
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
  /// receive queue populated). One buffer per descriptor; a frame larger than
  /// one buffer needs MRG_RXBUF (the port sizes buffers for its MTU
  /// otherwise). One publish and at most one doorbell. Returns how many
  /// buffers were posted.
  @inlinable @discardableResult
  public mutating func refill(_ pool: inout BufferPool) -> Int {
    // Each buffer takes one descriptor / slot and all have the same shape:
    // the room and the segment's offset and length are computed once.
    let want = rx.freeCount
    let offset = UInt16(truncatingIfNeeded: pool.headroom)
    // The device writes header + frame from `offset - headerLength` to the end of the buffer.
    let start = pool.headroom &- headerLength
    let length = UInt32(truncatingIfNeeded: pool.bufferSize &- start)
    // A buffer is taken from the pool only when the ring has room for it.
    // A pool whose headroom cannot hold the header, or whose buffers would
    // be 0 bytes (the ring refuses those), gets none asked for: nothing
    // traps, and every buffer handed over is posted. `start` is converted
    // once here, not checked per buffer.
    let fits = start >= 0 && length > 0
    let startOffset = UInt64(truncatingIfNeeded: start)
    let posted: Int
    if RX.keepsReusedSlotsUnwritten {
      // Split: the buffers come off the pool as one block in the order they
      // were released, so a burst its consumer released in order goes back
      // into the slots it came from and the ring rewrites none of their
      // descriptors (`BufferPool.takeBlock`). Packed writes every slot
      // anyway, and measured slower so: it pops the stack as ever.
      let taken = pool.takeBlock(upTo: fits ? want : 0)
      var next = 0
      posted = rx.add(upTo: taken) {
        guard next < taken else { return nil }
        var b = pool.blockBuffer(next)
        next &+= 1
        b.offset = offset
        return (.writable(pool.iova(b) &+ startOffset, length), Self.token(b))
      }
      pool.endBlock(used: posted, taken: taken)
    } else {
      posted = rx.add(upTo: fits ? want : 0) {
        guard var b = pool.allocate() else { return nil }
        b.offset = offset
        return (.writable(pool.iova(b) &+ startOffset, length), Self.token(b))
      }
    }
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
  /// the ring in batches, first thing in a call: the slots an earlier call
  /// emptied, so a burst just taken reaches the caller before any descriptor
  /// is rewritten. With MRG_RXBUF a frame may span several buffers: it
  /// comes out as one chained handle (`PacketBuffer.isChained`), its buffers
  /// linked in the pool in the order the device used them (no copy).
  @inlinable public mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool) -> Int {
    // One branch per burst; each body has its header length as a constant (see `headerLength`).
    hashReport
      ? receive(into: &burst, pool: &pool, headerLength: VirtioNetHdrHash.size, hashReport: true)
      : receive(into: &burst, pool: &pool, headerLength: Self.headerSize, hashReport: false)
  }

  @inlinable @inline(__always)
  mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool, headerLength: Int, hashReport: Bool) -> Int {
    // The refill for the slots earlier calls emptied comes first, not after
    // the frames this call takes: a forwarder then sends a burst on as soon
    // as it arrives, and rewrites receive descriptors while the device
    // works on it (issue 17: loopback through DPDK's vhost, split ring,
    // 1.13× paired; docs/PERFORMANCE.md "Refill first").
    if rx.freeCount >= refillBatch { refill(&pool) }
    let capacity = burst.count
    var n = 0
    while n < capacity {
      guard case .used(let used) = rx.nextUsed() else { break }
      var b = Self.buffer(used.token)
      if _slowPath(rxFollowing != 0) {
        // MRG_RXBUF (§5.1.6.4): a buffer that goes on a frame — dropped, or being put together.
        if let frame = continueFrame(b, length: used.length, pool: &pool) {
          burst[n] = frame
          n &+= 1
        }
        continue
      }
      // The ring core checked used.length <= what was posted (the whole buffer).
      let len = Int(used.length)
      guard len >= headerLength else {
        stats.rxErrors &+= 1
        pool.release(b)
        continue
      }
      let dataLength = len &- headerLength
      b.length = UInt16(truncatingIfNeeded: dataLength)
      // The header is read only for a feature that gives it meaning (one test
      // for all of them): without one the frame's cache lines stay the device's.
      if hashReport || readsHeader {
        // SAFETY: the header lies in the buffer's headroom (offset >= headerLength), inside the pool's region.
        let header = pool.pointer(b) + (Int(b.offset) &- headerLength)
        if mergeable {
          // §5.1.6.4: num_buffers buffers hold this frame, this one first.
          let numBuffers = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
          if _slowPath(numBuffers != 1) {
            startFrame(b, numBuffers: Int(numBuffers), length: len, header: header, pool: &pool)
            continue
          }
        }
        guard readHeader(&b, header: header, frameLength: dataLength, hashReport: hashReport) else {
          stats.rxErrors &+= 1
          pool.release(b)
          continue
        }
      }
      burst[n] = b
      n &+= 1
      // Counted in place, not in a local: one register fewer in the loop (~3 instructions per packet, docs/PERFORMANCE.md).
      stats.rxBytes &+= UInt64(dataLength)
    }
    // An empty poll (most polls of an idle port) stores nothing.
    if n > 0 { stats.rxPackets &+= UInt64(n) }
    return n
  }

  /// The receive header's metadata into `b` (§5.1.6.4.3 hash report mark;
  /// §5.1.6.4.1 DATA_VALID, NEEDS_CSUM with its offsets, a large TCP segment
  /// out of line). Read only for a feature that gives it meaning.
  /// `frameLength`: the checksum field and hdr_len must lie inside it (nil for
  /// the first buffer of a chain: checked when it is complete). False: the
  /// device-written header lies and the frame is to be dropped.
  @inlinable @inline(__always)
  mutating func readHeader(_ b: inout PacketBuffer, header: UnsafeMutableRawPointer, frameLength: Int?, hashReport: Bool) -> Bool {
    // §5.1.6.4.3: hash_value / hash_report stay in the headroom, read only when asked for.
    if hashReport { b.flags = PacketBuffer.hashReported }
    guard rxChecksum else { return true }
    // flags and gso_type in one load: with neither set (most frames) there is nothing more to read.
    let flagsAndGSO = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 0, as: UInt16.self))
    if flagsAndGSO == 0 { return true }
    let flags = UInt8(truncatingIfNeeded: flagsAndGSO)
    // DATA_VALID — the device checked it; NEEDS_CSUM — only a partial
    // checksum, complete it from csum_start (kept as metadata).
    if flags & VirtioNetHdr.flagDataValid != 0 { b.flags |= PacketBuffer.checksumValid }
    if flags & VirtioNetHdr.flagNeedsCsum != 0 {
      let start = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
      let offset = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
      // Device-written offsets: only kept when the checksum field lies inside the frame.
      if let frameLength, Int(start) &+ Int(offset) &+ 2 > frameLength { return false }
      b.flags |= PacketBuffer.needsChecksum
      b.csumStart = start
      b.csumOffset = offset
    }
    // A large TCP segment (GUEST_TSO4/6), checked out of line; a chain's is counted when complete.
    if _slowPath(flagsAndGSO >> 8 != 0) {
      guard readSegmentation(&b, header: header, frameLength: frameLength) else { return false }
      if frameLength != nil { stats.rxGSO &+= 1 }
    }
    return true
  }

  /// Buffers of a MRG_RXBUF frame still being put together (its first
  /// buffers arrived, the rest not yet): the pair holds them, not the pool.
  public func assemblingBuffers(_ pool: borrowing BufferPool) -> Int {
    rxFollowing > 0 && !rxDropping ? pool.packetSize(rxHead).segments : 0
  }

  /// MRG_RXBUF (§5.1.6.4): the first buffer of a frame whose header says it
  /// takes `numBuffers` (≠ 1). Out of line: the one-buffer path stays as it
  /// was. 0, or more than the ring could ever have posted, is a lie: the
  /// frame is dropped, counted, and at most a ring's worth of buffers skipped.
  @inlinable @inline(never)
  mutating func startFrame(_ first: PacketBuffer, numBuffers: Int, length: Int, header: UnsafeMutableRawPointer, pool: inout BufferPool) {
    var b = first
    guard numBuffers >= 1, numBuffers <= rx.size else {
      stats.rxErrors &+= 1
      pool.release(b)
      rxFollowing = min(max(numBuffers &- 1, 0), rx.size &- 1)
      rxDropping = true
      return
    }
    let dataLength = length &- headerLength
    b.length = UInt16(truncatingIfNeeded: dataLength)
    // The checksum field and hdr_len are checked against the whole chain when it is complete.
    guard readHeader(&b, header: header, frameLength: nil, hashReport: hashReport) else {
      // A GSO header that lies: the frame is dropped, its other buffers skipped.
      stats.rxErrors &+= 1
      pool.release(b)
      rxFollowing = numBuffers &- 1
      rxDropping = true
      return
    }
    // Its other buffers follow in used order.
    rxHead = b
    rxTail = b
    rxFollowing = numBuffers &- 1
    rxDropping = false
    rxChainBytes = dataLength
  }

  /// MRG_RXBUF: a continuation buffer — frame data from where it was posted,
  /// no header — is skipped (the rest of a dropped frame) or joins the frame
  /// being assembled. Returns the frame once its
  /// last buffer is in (nil before, or when it was dropped: counted).
  @inlinable @inline(never)
  mutating func continueFrame(_ buffer: PacketBuffer, length: UInt32, pool: inout BufferPool) -> PacketBuffer? {
    var b = buffer
    rxFollowing &-= 1
    if rxDropping {
      // The rest of a dropped frame: these buffers hold frame data, not a header.
      pool.release(b)
      return nil
    }
    b.offset = UInt16(truncatingIfNeeded: pool.headroom &- headerLength)
    b.length = UInt16(truncatingIfNeeded: length)
    guard length > 0 else {
      // The device said the frame goes on but wrote nothing here: drop it and its rest.
      stats.rxErrors &+= 1
      pool.release(b)
      pool.release(rxHead)
      rxDropping = true
      return nil
    }
    pool.append(b, head: &rxHead, tail: &rxTail)
    rxChainBytes &+= Int(length)
    guard rxFollowing == 0 else { return nil }
    let head = rxHead
    if head.flags & PacketBuffer.needsChecksum != 0 && Int(head.csumStart) &+ Int(head.csumOffset) &+ 2 > rxChainBytes {
      stats.rxErrors &+= 1
      pool.release(head)
      return nil
    }
    if head.gsoType != 0 {
      guard rxHeaderHint <= rxChainBytes else {
        stats.rxErrors &+= 1
        pool.release(head)
        return nil
      }
      stats.rxGSO &+= 1
    }
    stats.rxChains &+= 1
    stats.rxBytes &+= UInt64(rxChainBytes)
    return head
  }

  /// §5.1.6.4.1: the header's gso_type (one negotiated, GUEST_TSO4/6; the ECN
  /// bit only with GUEST_ECN), gso_size (an MSS, not 0) and hdr_len (within
  /// `frameLength`; a chain's is kept in `rxHeaderHint` and checked when it is
  /// complete) into `b`. False: the header lies, the frame is dropped.
  @inlinable @inline(never)
  mutating func readSegmentation(_ b: inout PacketBuffer, header: UnsafeMutableRawPointer, frameLength: Int?) -> Bool {
    let gso = header.load(fromByteOffset: 1, as: UInt8.self)
    let type = gso & ~VirtioNetHdr.gsoECN
    let hint = Int(UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
    let size = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
    guard type != 0, type < 8, rxGSOMask >> type & 1 == 1, gso == type || rxECN, size > 0, hint <= (frameLength ?? Int.max) else {
      return false
    }
    b.gsoType = gso
    b.gsoSize = size
    rxHeaderHint = hint
    return true
  }

  // MARK: transmit (§5.1.6.2)

  /// Returns every finished TX buffer to the pool; returns how many.
  @inlinable @discardableResult
  public mutating func reclaim(_ pool: inout BufferPool) -> Int {
    var n = 0
    // The used length of a sent buffer means nothing: the ring may skip reading it.
    while case .used(let used) = tx.nextCompleted() {
      // A chain's token carries `BufferPool.chainMark` in its index: all its
      // buffers go back together, found by the pool's range check (no test here).
      pool.release(index: UInt32(truncatingIfNeeded: used.token))
      n &+= 1
    }
    return n
  }

  /// Queues the packets of `burst` in order; returns how many it took (the
  /// rest stay the caller's: retry or release them). Stops at the first packet
  /// it cannot take: ring full (`txRingFull`) or a malformed handle
  /// (`txErrors`). Reclaims finished buffers first; one doorbell at most.
  /// A chained packet (several buffers) goes out as one descriptor chain —
  /// indirect when the ring has tables for it — and its buffers return to the
  /// pool together when the device is done with it.
  @inlinable public mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool) -> Int {
    // One test per burst for a non-default `NetQueuePolicy` (reclaim cadence,
    // kick batch): the default's body stays as it was, the paced one is a copy out of line.
    if _slowPath(txPaced) { return transmitPaced(burst, pool: &pool) }
    return transmit(burst, pool: &pool, paced: false)
  }

  @inlinable @inline(never)
  mutating func transmitPaced(_ burst: Span<PacketBuffer>, pool: inout BufferPool) -> Int {
    transmit(burst, pool: &pool, paced: true)
  }

  @inlinable @inline(__always)
  mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool, paced: Bool) -> Int {
    // `NetQueuePolicy.txReclaimBelow` (paced only: by default every call reclaims).
    let reclaimed = !paced || tx.freeCount < txReclaimBelow ? reclaim(&pool) : 0
    let count = burst.count
    // One branch per burst; each batch body has its header length as a constant (see `headerLength`).
    var run =
      hashReport
      ? postOneBufferPackets(burst, from: 0, pool: &pool, headerLength: VirtioNetHdrHash.size, hashReport: true)
      : postOneBufferPackets(burst, from: 0, pool: &pool, headerLength: Self.headerSize, hashReport: false)
    // Out of line: a burst of one-buffer packets never goes there.
    if _slowPath(run.atChain) { run = postWithChains(burst, after: run, pool: &pool) }
    let n = run.posted
    let bytes = run.bytes
    var malformed = run.malformed
    // Short with no malformed handle and a broken queue: an error too, not a full ring.
    if n < count && !malformed && tx.brokenReason != nil { malformed = true }
    if malformed {
      stats.txErrors &+= 1
    } else if n < count {
      stats.txRingFull &+= UInt64(count &- n)
      nudgeStalledTransmit(progress: reclaimed | n != 0)
    }
    stats.txPackets &+= UInt64(n)
    stats.txBytes &+= bytes
    if paced && txKickBatch != 1 {
      kickBatched(posted: n)
    } else if n > 0 && tx.publish() {
      // §2.7.13.3 / §2.8.21.1: publish, then notify only when the device asked (EVENT_IDX / NO_NOTIFY).
      txDoorbell.ring(tx.notificationValue)
      stats.notifications &+= 1
    }
    return n
  }

  /// `NetQueuePolicy.txKickBatch` > 1: publishes what this call posted at
  /// once (a polling device sees it), but rings a doorbell the device asked
  /// for only once `txKickBatch` packets went out since the last one, or
  /// when this call posted nothing or left the ring full (the caller stopped
  /// or waits for the device: a kick owed must not wait longer). A kick asked
  /// for once stays owed (EVENT_IDX: a later publish may not cross the event
  /// again). Out of line: the default policy never comes here.
  @inlinable @inline(never)
  mutating func kickBatched(posted n: Int) {
    if n > 0 {
      if tx.publish() { txKickOwed = true }
      txUnkicked &+= n
    }
    guard txKickOwed, n == 0 || txUnkicked >= txKickBatch || tx.freeCount == 0 else { return }
    flushTransmit()
  }

  /// Rings a TX doorbell the device asked for and `txKickBatch` held back
  /// (nothing otherwise). Call it when a burst of sends ends, with a kick
  /// batch above 1; `transmit` of an empty burst does the same.
  @inlinable public mutating func flushTransmit() {
    txUnkicked = 0
    guard txKickOwed else { return }
    txKickOwed = false
    txDoorbell.ring(tx.notificationValue)
    stats.notifications &+= 1
  }

  /// The TX ring is full: notify the device when it has completed nothing
  /// for `stallNotifyCalls` calls in a row, though its event suppression did
  /// not ask (§2.8.10 / §2.7.10: a notification the device did not ask for is
  /// allowed). A device that re-enables notifications and then takes more
  /// descriptors leaves its event offset behind what it has read: QEMU 7.2's
  /// virtio-net after an asynchronous send completes, packed ring with
  /// EVENT_IDX (its packed pop does not move off_wrap as the split pop moves
  /// avail_event). The driver's next descriptors then never cross the event,
  /// and a full ring waits for a doorbell that never comes. Counted in
  /// `txStallNotifications`. Out of line: only a full ring comes here.
  @inlinable @inline(never)
  mutating func nudgeStalledTransmit(progress: Bool) {
    guard !progress else {
      txStalledCalls = 0
      return
    }
    txStalledCalls &+= 1
    guard txStalledCalls >= Self.stallNotifyCalls, tx.brokenReason == nil else { return }
    txStalledCalls = 0
    txDoorbell.ring(tx.notificationValue)
    stats.notifications &+= 1
    stats.txStallNotifications &+= 1
  }

  /// What a stretch of `transmit` posted.
  @usableFromInline struct TransmitRun {
    @usableFromInline var posted: Int
    @usableFromInline var bytes: UInt64
    @usableFromInline var malformed: Bool
    /// It stopped at a chained packet (every packet before it was posted).
    @usableFromInline var atChain: Bool
    @inlinable init(posted: Int, bytes: UInt64, malformed: Bool, atChain: Bool) {
      self.posted = posted
      self.bytes = bytes
      self.malformed = malformed
      self.atChain = atChain
    }
  }

  /// Posts the one-buffer packets of `burst` from `first` on, up to the first
  /// chained (or GSO) one, as one batch (`add(upTo:)`): the ring's checks once.
  @inlinable @inline(__always)
  mutating func postOneBufferPackets(
    _ burst: Span<PacketBuffer>, from first: Int, pool: inout BufferPool, headerLength: Int, hashReport: Bool
  ) -> TransmitRun {
    // Each packet takes one descriptor (split) or one slot (packed): the room
    // is checked once per batch, not per packet.
    let room = min(burst.count &- first, tx.freeCount)
    // Plain copies: the closure below must not read `self` while `tx` is being changed.
    let txChecksum = self.txChecksum
    var malformed = false
    var atChain = false
    var handed = 0
    var lastLength = 0
    var bytes: UInt64 = 0
    let k = tx.add(upTo: room) {
      let b = burst[first &+ handed]
      let start = Int(b.offset) &- headerLength
      // The handle is the caller's: check it names a whole packet inside one
      // buffer of this pool with room for the header, so nothing outside it is written.
      guard Int(b.index) < pool.count, start >= 0, b.length > 0, Int(b.offset) &+ Int(b.length) <= pool.bufferSize else {
        malformed = true
        return nil
      }
      let base = pool.pointer(b)
      // §5.1.6.2: virtio_net_hdr_v1 (see `writeHeader`), written here with
      // the software fallback in one test of the packet's flags.
      var word0: UInt64 = 0
      var word1: UInt32 = 0
      // One test of the flags for the rare cases: a chain, a partial checksum, a GSO packet.
      if _slowPath(b.flags & (PacketBuffer.needsChecksum | PacketBuffer.chained | PacketBuffer.segmented) != 0) {
        // A chain or a GSO packet leaves the batch: `postWithChains` takes it.
        if b.flags & (PacketBuffer.chained | PacketBuffer.segmented) != 0 {
          atChain = true
          return nil
        }
        if txChecksum {
          (word0, word1) = Self.partialChecksumWords(b)
        } else {
          InternetChecksum.complete(data: base + Int(b.offset), length: Int(b.length), start: Int(b.csumStart), offset: Int(b.csumOffset))
        }
      }
      // start >= 0 and start + headerLength <= offset (checked above): the header lies in the buffer's headroom.
      Self.storeHeader(word0, word1, hashReport: hashReport, at: base + start)
      handed &+= 1
      lastLength = Int(b.length)
      bytes &+= UInt64(b.length)
      return (.readable(pool.iova(b) &+ UInt64(start), UInt32(Int(b.length) &+ headerLength)), Self.token(b))
    }
    // A packet handed over but not posted (a 0-byte segment, which a checked
    // handle never makes) stays the caller's: an error.
    if handed > k {
      bytes &-= UInt64(lastLength)
      malformed = true
    }
    return TransmitRun(posted: first &+ k, bytes: bytes, malformed: malformed, atChain: atChain && handed == k)
  }

  /// The rest of a burst that holds chains or GSO packets: each on its own
  /// (`addChain`, `addGSO`), the one-buffer packets between them in batches.
  @inlinable @inline(never)
  mutating func postWithChains(_ burst: Span<PacketBuffer>, after first: TransmitRun, pool: inout BufferPool) -> TransmitRun {
    var total = first
    while total.atChain && total.posted < burst.count {
      let p = burst[total.posted]
      switch p.gsoType != 0 ? addGSO(p, pool: &pool) : addChain(p, pool: &pool) {
      case .added(let length):
        total.posted &+= 1
        total.bytes &+= UInt64(length)
        if p.isChained { stats.txChains &+= 1 }
      case .ringFull:
        total.atChain = false
        return total
      case .malformed:
        total.malformed = true
        total.atChain = false
        return total
      }
      let next = postOneBufferPackets(burst, from: total.posted, pool: &pool, headerLength: headerLength, hashReport: hashReport)
      total.posted = next.posted
      total.bytes &+= next.bytes
      total.malformed = next.malformed
      total.atChain = next.atChain
    }
    return total
  }

  /// §5.1.6.2: virtio_net_hdr_v1 in front of the frame, written as two
  /// little-endian words (flags, gso_type, hdr_len, gso_size, csum_start |
  /// csum_offset, num_buffers): all zero but for a partial checksum, which
  /// goes to the device with CSUM (without it the caller completed it).
  @inlinable @inline(__always) static func writeHeader(
    _ b: PacketBuffer, at header: UnsafeMutableRawPointer, checksumOffload: Bool, hashReport: Bool
  ) {
    let partial = b.flags & PacketBuffer.needsChecksum != 0 && checksumOffload
    let (word0, word1) = partial ? partialChecksumWords(b) : (0, 0)
    // The caller checked start >= 0 and start + headerLength <= offset: the header lies in the buffer's headroom.
    storeHeader(word0, word1, hashReport: hashReport, at: header)
  }

  /// A partial checksum the device completes (§5.1.6.2): NEEDS_CSUM with
  /// csum_start in word 0, csum_offset in word 1.
  @inlinable @inline(__always) static func partialChecksumWords(_ b: PacketBuffer) -> (UInt64, UInt32) {
    (UInt64(VirtioNetHdr.flagNeedsCsum) | UInt64(b.csumStart) << 48, UInt32(b.csumOffset))
  }

  /// Stores the header's two words at `header`, and with HASH_REPORT zeroes
  /// virtio_net_hdr_v1_hash's hash_value, hash_report and padding (the
  /// device's to fill). One place for the one-buffer loop and `writeHeader`.
  @inlinable @inline(__always) static func storeHeader(
    _ word0: UInt64, _ word1: UInt32, hashReport: Bool, at header: UnsafeMutableRawPointer
  ) {
    // SAFETY: the callers checked that the header (headerLength bytes) lies in the buffer's headroom.
    header.storeBytes(of: word0.littleEndian, as: UInt64.self)
    header.storeBytes(of: word1.littleEndian, toByteOffset: 8, as: UInt32.self)
    if hashReport { header.storeBytes(of: UInt64(0), toByteOffset: 12, as: UInt64.self) }
  }

  /// Most buffers one transmitted packet may span (a 64 KiB segment in 2 KiB
  /// buffers is 33); a longer chain is refused as malformed.
  public static var maxTransmitSegments: Int { 64 }

  @usableFromInline enum ChainAdd {
    case added(bytes: Int)
    case ringFull
    case malformed
  }

  /// Posts one chained packet: the header in the head's headroom and the
  /// head's data as the first descriptor, each further segment as one more
  /// (§2.7.5 / §2.8.13; the ring core makes it indirect when it has tables
  /// that fit). Every segment of the caller's chain is checked first.
  @inlinable @inline(never) mutating func addChain(_ head: PacketBuffer, pool: inout BufferPool, headerHint: Int = 0) -> ChainAdd {
    let start = Int(head.offset) &- headerLength
    guard Int(head.index) < pool.count, start >= 0, head.length > 0, Int(head.offset) &+ Int(head.length) <= pool.bufferSize else {
      return .malformed
    }
    var segments = InlineArray<64, BufferSegment>(repeating: .readable(0, 0))
    segments[0] = .readable(pool.iova(head) &+ UInt64(start), UInt32(Int(head.length) &+ headerLength))
    var used = 1
    var bytes = Int(head.length)
    var cur = head
    while let s = pool.next(after: cur) {
      guard used < Self.maxTransmitSegments, s.length > 0, Int(s.offset) &+ Int(s.length) <= pool.bufferSize else { return .malformed }
      segments[used] = .readable(pool.iova(s) &+ UInt64(s.offset), UInt32(s.length))
      used &+= 1
      bytes &+= Int(s.length)
      cur = s
    }
    let base = pool.pointer(head)
    if head.flags & PacketBuffer.needsChecksum != 0 && !txChecksum {
      guard InternetChecksum.complete(chain: head, bytes: bytes, pool: pool) else { return .malformed }
    }
    Self.writeHeader(head, at: base + start, checksumOffload: txChecksum, hashReport: hashReport)
    if headerHint > 0 { Self.writeSegmentation(head, headerHint: headerHint, at: base + start) }
    // A one-buffer packet (a GSO frame in a big buffer) is released as one.
    let mark = head.isChained ? UInt64(BufferPool.chainMark) : 0
    let result = tx.add(segments.span.extracting(0..<used), token: Self.token(head) | mark)
    switch result {
    case .added: return .added(bytes: bytes)
    case .ringFull: return .ringFull
    case .invalidChain, .broken: return .malformed
    }
  }

  /// §5.1.6.2: the GSO words of a header `writeHeader` just wrote (gso_type,
  /// hdr_len, gso_size); the checksum words stay as written (NEEDS_CSUM).
  @inlinable static func writeSegmentation(_ b: PacketBuffer, headerHint: Int, at header: UnsafeMutableRawPointer) {
    // SAFETY: as `writeHeader`: the 12 header bytes lie in the buffer's headroom.
    header.storeBytes(of: b.gsoType, toByteOffset: 1, as: UInt8.self)
    header.storeBytes(of: UInt16(truncatingIfNeeded: headerHint).littleEndian, toByteOffset: 2, as: UInt16.self)
    header.storeBytes(of: b.gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
  }

  /// Posts a GSO packet (`gsoType` set): to the device as it is when it
  /// negotiated that type (HOST_TSO4/6, HOST_ECN for the ECN bit) and the
  /// packet's checksum is partial (§5.1.6.2.1: a GSO packet goes with
  /// NEEDS_CSUM); else cut into MSS-sized frames in software here, the way
  /// the device would have.
  @inlinable @inline(never) mutating func addGSO(_ head: PacketBuffer, pool: inout BufferPool) -> ChainAdd {
    let type = head.gsoType & ~VirtioNetHdr.gsoECN
    let offloadable = type != 0 && type < 8 && txGSOMask >> type & 1 == 1 && (head.gsoType == type || txECN)
      && head.flags & PacketBuffer.needsChecksum != 0 && txChecksum && head.gsoSize > 0
    if offloadable, Int(head.index) < pool.count, Int(head.csumStart) &+ 13 < Int(head.length),
      Int(head.offset) &+ Int(head.length) <= pool.bufferSize
    {
      // hdr_len (a hint, §5.1.6.2): up to the end of the TCP header, csum_start being its start.
      let dataOffset = pool.pointer(head).load(fromByteOffset: Int(head.offset) &+ Int(head.csumStart) &+ 12, as: UInt8.self)
      let result = addChain(head, pool: &pool, headerHint: Int(head.csumStart) &+ Int(dataOffset >> 4) &* 4)
      if case .added = result { stats.txGSO &+= 1 }
      return result
    }
    return addSegmented(head, pool: &pool)
  }

  /// Software segmentation (`TCPSegmentation`): each segment of `head`'s
  /// packet is copied into one fresh pool buffer with its headers fixed up
  /// and its checksums complete, and posted as a one-buffer packet; then
  /// `head` (the whole chain) goes back to the pool. All or nothing: ring
  /// slots and pool buffers for every segment are checked first. A packet
  /// whose headers are not in its first buffer, that is not TCP over IPv4 /
  /// IPv6 as its gso_type says, or whose segments do not fit one buffer, is
  /// malformed.
  @inlinable @inline(never) mutating func addSegmented(_ head: PacketBuffer, pool: inout BufferPool) -> ChainAdd {
    // The caller's chain, every segment checked: PoolPacket refuses what it cannot cut.
    guard head.length > 0, var packet = TCPSegmentation.PoolPacket(head, pool: pool) else { return .malformed }
    let total = packet.bytes
    let k = packet.layout.segmentCount
    guard packet.layout.segmentLength(0) <= pool.bufferSize &- pool.headroom, pool.headroom >= headerLength else { return .malformed }
    guard tx.freeCount >= k, pool.available >= k else { return .ringFull }
    for i in 0..<k {
      guard var out = pool.allocate() else { return .ringFull }
      let len = packet.layout.segmentLength(i)
      out.length = UInt16(truncatingIfNeeded: len)
      let dst = pool.pointer(out) + Int(out.offset)
      // len <= bufferSize - headroom (checked above): the segment fits the buffer.
      guard packet.write(segment: i, into: dst, pool: pool) else {
        pool.release(out)
        return .malformed
      }
      Self.writeHeader(out, at: dst - headerLength, checksumOffload: false, hashReport: hashReport)
      let posted = tx.add(.readable(pool.iova(out) &+ UInt64(Int(out.offset) &- headerLength), UInt32(len &+ headerLength)), token: Self.token(out))
      guard posted == .added else {
        // Only a broken queue refuses here (the room was checked): the rest is not sent.
        pool.release(out)
        return .malformed
      }
    }
    stats.txSegmented &+= 1
    stats.txSegments &+= UInt64(k)
    pool.release(head)
    return .added(bytes: total)
  }

  // MARK: interrupts (§2.7.7 / §2.8.10)

  /// Asks the device for an interrupt at the next received packet. Returns
  /// true when packets are already waiting: receive again instead of sleeping.
  @inlinable public mutating func armReceiveInterrupt() -> Bool { rx.enableInterrupts() }

  /// Back to polling: asks the device not to interrupt for received packets.
  @inlinable public mutating func disarmReceiveInterrupt() { rx.disableInterrupts() }
}
