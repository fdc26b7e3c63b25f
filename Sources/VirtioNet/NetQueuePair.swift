import VirtioCore
import VirtioSpec

/// Per-queue-pair counters (read them from the owning thread).
public struct NetQueueStats: Sendable, Equatable {
  public var rxPackets: UInt64 = 0
  public var rxBytes: UInt64 = 0
  /// Frames the device returned that the driver could not accept (too short, spread over several buffers).
  public var rxErrors: UInt64 = 0
  /// Times the RX ring could not be refilled because the pool was empty.
  public var rxNoBuffers: UInt64 = 0
  public var txPackets: UInt64 = 0
  public var txBytes: UInt64 = 0
  /// Packets `transmit` did not take because the TX ring was full.
  public var txRingFull: UInt64 = 0
  /// TX packets refused because they had no headroom for the virtio-net header.
  public var txErrors: UInt64 = 0
  public var notifications: UInt64 = 0
  public init() {}
}

/// One receive queue and one transmit queue of a virtio-net device, driven by
/// one thread: bursts in, bursts out, buffers from a `BufferPool` by value.
///
/// Every buffer carries the 12-byte virtio_net_hdr_v1 (§5.1.6) in its headroom,
/// right before the data, so a received buffer can be transmitted as is.
public struct NetQueuePair<RX: Virtqueue & ~Copyable, TX: Virtqueue & ~Copyable>: ~Copyable {
  public var rx: RX
  public var tx: TX
  public var stats = NetQueueStats()
  @usableFromInline let rxDoorbell: Doorbell
  @usableFromInline let txDoorbell: Doorbell
  @usableFromInline let mergeable: Bool
  @usableFromInline let txChecksum: Bool
  /// §5.1.6: with VERSION_1 the header is always virtio_net_hdr_v1 (12 bytes).
  public static var headerSize: Int { 12 }

  public init(
    rx: consuming RX, tx: consuming TX, rxDoorbell: Doorbell, txDoorbell: Doorbell, features: FeatureSet
  ) {
    self.rx = rx
    self.tx = tx
    self.rxDoorbell = rxDoorbell
    self.txDoorbell = txDoorbell
    self.mergeable = features.contains(bit: NetFeature.mrgRxbuf)
    self.txChecksum = features.contains(bit: NetFeature.csum)
  }

  @inlinable static func token(_ b: PacketBuffer) -> UInt64 { UInt64(b.index) | UInt64(b.offset) << 32 }
  @inlinable static func buffer(_ token: UInt64) -> PacketBuffer {
    PacketBuffer(index: UInt32(truncatingIfNeeded: token), offset: UInt16(truncatingIfNeeded: token >> 32), length: 0)
  }

  // MARK: receive (§5.1.6.3, §5.1.6.4)

  /// Keeps the RX ring full from `pool` (§5.1.6.3: the driver should keep the
  /// receive queue populated). Returns how many buffers were posted.
  @inlinable @discardableResult
  public mutating func refill(_ pool: inout BufferPool) -> Int {
    var posted = 0
    while rx.freeCount > 0 {
      guard var b = pool.allocate() else {
        stats.rxNoBuffers &+= 1
        break
      }
      b.offset = UInt16(truncatingIfNeeded: pool.headroom)
      let start = Int(b.offset) &- Self.headerSize
      let seg = BufferSegment.writable(pool.iova(b) &+ UInt64(start), UInt32(pool.bufferSize &- start))
      guard rx.add(seg, token: Self.token(b)) == .added else {
        pool.release(b)
        break
      }
      posted &+= 1
    }
    if posted > 0 && rx.publish() {
      rxDoorbell.ring(rx.notificationValue)
      stats.notifications &+= 1
    }
    return posted
  }

  /// Takes up to `burst.count` received packets into `burst`; returns how many.
  /// The caller owns them (transmit them or release them to the pool).
  @inlinable public mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool) -> Int {
    var n = 0
    while n < burst.count {
      guard case .used(let used) = rx.nextUsed() else { break }
      var b = Self.buffer(used.token)
      let len = Int(used.length)
      guard len >= Self.headerSize else {
        stats.rxErrors &+= 1
        pool.release(b)
        continue
      }
      let header = pool.pointer(b) + (Int(b.offset) &- Self.headerSize)
      // SAFETY: the header lies in the buffer's headroom, inside the pool's region.
      let flags = header.load(fromByteOffset: 0, as: UInt8.self)
      if mergeable {
        // §5.1.6.4: num_buffers > 1 spreads a frame over several buffers; buffers
        // are sized for the MTU, so this only happens with a misbehaving device.
        let numBuffers = UInt16(littleEndian: header.load(fromByteOffset: 10, as: UInt16.self))
        if numBuffers > 1 {
          stats.rxErrors &+= 1
          pool.release(b)
          var rest = Int(numBuffers) &- 1
          while rest > 0, case .used(let more) = rx.nextUsed() {
            pool.release(Self.buffer(more.token))
            rest &-= 1
          }
          continue
        }
      }
      b.length = UInt16(truncatingIfNeeded: len &- Self.headerSize)
      if flags & VirtioNetHdr.flagDataValid != 0 { b.flags = PacketBuffer.checksumValid }
      burst[n] = b
      n &+= 1
      stats.rxBytes &+= UInt64(b.length)
    }
    stats.rxPackets &+= UInt64(n)
    if n > 0 { refill(&pool) }
    return n
  }

  // MARK: transmit (§5.1.6.2)

  /// Returns finished TX buffers to the pool; returns how many.
  @inlinable @discardableResult
  public mutating func reclaim(_ pool: inout BufferPool) -> Int {
    var n = 0
    while case .used(let used) = tx.nextUsed() {
      pool.release(Self.buffer(used.token))
      n &+= 1
    }
    return n
  }

  /// Queues the packets of `burst` in order; returns how many it took (the
  /// rest stay the caller's: retry or release them). One doorbell at most.
  @inlinable public mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool) -> Int {
    reclaim(&pool)
    var n = 0
    while n < burst.count {
      let b = burst[n]
      guard Int(b.offset) >= Self.headerSize, b.length > 0 else {
        // No room for the header: refuse it rather than overwrite the previous buffer.
        stats.txErrors &+= 1
        break
      }
      let start = Int(b.offset) &- Self.headerSize
      let header = pool.pointer(b) + start
      // §5.1.6.2: virtio_net_hdr_v1 in front of the frame; checksum offload only if CSUM was negotiated.
      var hdr = VirtioNetHdr()
      if txChecksum && b.flags & PacketBuffer.needsChecksum != 0 {
        hdr.flags = VirtioNetHdr.flagNeedsCsum
        hdr.csum_start = b.csumStart.littleEndian
        hdr.csum_offset = b.csumOffset.littleEndian
      }
      // SAFETY: `start` >= 0 and the header lies in the buffer's headroom.
      header.storeBytes(of: hdr, as: VirtioNetHdr.self)
      let seg = BufferSegment.readable(pool.iova(b) &+ UInt64(start), UInt32(Int(b.length) &+ Self.headerSize))
      guard tx.add(seg, token: Self.token(b)) == .added else {
        stats.txRingFull &+= UInt64(burst.count &- n)
        break
      }
      stats.txBytes &+= UInt64(b.length)
      n &+= 1
    }
    stats.txPackets &+= UInt64(n)
    if n > 0 && tx.publish() {
      txDoorbell.ring(tx.notificationValue)
      stats.notifications &+= 1
    }
    return n
  }
}
