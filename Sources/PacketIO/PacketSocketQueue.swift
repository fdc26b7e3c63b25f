internal import CPacketSys
import VirtioCore
import VirtioNet

/// The kernel path's queue: one AF_PACKET socket and its TPACKET_V2 rings
/// (Documentation/networking/packet_mmap.rst). RX frames are copied into pool
/// buffers and handed back to the kernel at once; TX copies pool buffers into
/// ring frames, marks them SEND_REQUEST and kicks with one send().
///
/// The kernel owns a frame while its tp_status says so: tp_status is read with
/// acquire before the frame, and written with release after it. Header fields
/// are still checked before use (offset and length inside the frame).
///
/// Every frame is delivered or counted (issue 13): a TX frame longer than the
/// interface's MTU allows is taken and dropped here (`txErrors` and
/// `txDropped`) — with PACKET_LOSS the kernel would skip it silently; one
/// shorter than an Ethernet header is refused (`txErrors`); frames a failed kick
/// (ENOBUFS/EAGAIN) left in SEND_REQUEST are kicked again when idle and, at
/// `finish`, taken back out of `txPackets` into `txDropped`; RX frames left in
/// the ring at `finish`, and the ring's last overflows (PACKET_STATISTICS),
/// count in `rxDropped`.
package struct PacketSocketQueue: ~Copyable {
  let socket: PacketSocket
  let fd: Int32
  let rx: UnsafeMutableRawPointer
  let tx: UnsafeMutableRawPointer
  let frameSize: Int
  let rxFrames: Int
  let txFrames: Int
  var rxIndex = 0
  var txIndex = 0
  package var stats = NetQueueStats()
  var rxStarved = false
  /// The last kick could not send everything (ENOBUFS / EAGAIN): kick again when idle.
  var kickPending = false
  /// Longest frame the interface takes (MTU + Ethernet header), and with a VLAN tag.
  let maxFrame: Int

  /// A queue over TPACKET_V2 rings in plain memory the caller owns, with no
  /// socket (fd -1: kicks fail and are counted): the fuzz target fuzz-tpacket
  /// plays the kernel's side of the frames through it.
  package init(simulatedRX rx: UnsafeMutableRawPointer, tx: UnsafeMutableRawPointer, frameSize: Int, rxFrames: Int, txFrames: Int) {
    var r = vio_pkt_ring()
    r.fd = -1
    r.rx_ring = rx
    r.tx_ring = tx
    r.frame_size = UInt32(frameSize)
    r.rx_frames = UInt32(rxFrames)
    r.tx_frames = UInt32(txFrames)
    self.init(PacketSocket(adopting: r))
  }

  init(_ socket: consuming PacketSocket) {
    fd = socket.ring.fd
    rx = socket.ring.rx_ring
    tx = socket.ring.tx_ring
    frameSize = Int(socket.ring.frame_size)
    rxFrames = Int(socket.ring.rx_frames)
    txFrames = Int(socket.ring.tx_frames)
    maxFrame = socket.mtu &+ 14
    self.socket = socket
  }

  package mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool) -> Int {
    let capacity = burst.count
    var n = 0
    var bytes: UInt64 = 0
    let room = pool.bufferSize &- pool.headroom
    while n < capacity {
      let frame = rx + rxIndex &* frameSize
      // SAFETY: rxIndex < rxFrames: the frame lies inside the mapped RX ring.
      let status = vio_pkt_load_acquire_u32(frame)
      if status & UInt32(VIO_TP_STATUS_USER) == 0 { break }
      let len = Int(frame.loadUnaligned(fromByteOffset: Int(VIO_TP2_LEN), as: UInt32.self))
      let snap = Int(frame.loadUnaligned(fromByteOffset: Int(VIO_TP2_SNAPLEN), as: UInt32.self))
      let mac = Int(frame.loadUnaligned(fromByteOffset: Int(VIO_TP2_MAC), as: UInt16.self))
      let pkttype = frame.load(fromByteOffset: Int(VIO_TP2_SLL) &+ Int(VIO_SLL_PKTTYPE), as: UInt8.self)
      var accept = pkttype != UInt8(VIO_PACKET_OUTGOING)
      // The data must lie inside the frame, be whole (not truncated to the frame) and fit a buffer.
      if accept && (mac < Int(VIO_TP2_SLL) || snap <= 0 || snap != len || mac &+ snap > frameSize || snap > room) {
        stats.rxErrors &+= 1
        accept = false
      }
      if accept {
        guard var b = pool.allocate() else {
          // Leave the frame to the kernel's ring for the next call.
          if !rxStarved { stats.rxNoBuffers &+= 1 }
          rxStarved = true
          break
        }
        rxStarved = false
        b.length = UInt16(truncatingIfNeeded: snap)
        // SAFETY: [mac, mac + snap) lies inside the frame (checked), the buffer holds `room` >= snap bytes.
        (pool.pointer(b) + Int(b.offset)).copyMemory(from: frame + mac, byteCount: snap)
        if status & UInt32(VIO_TP_STATUS_CSUMNOTREADY) != 0 {
          // A locally sent frame whose L4 checksum the kernel left partial.
          ChecksumOffsets.mark(&b, pool: pool)
        }
        burst[n] = b
        n &+= 1
        bytes &+= UInt64(snap)
      }
      // Give the frame back to the kernel (release: our reads of it come first).
      vio_pkt_store_release_u32(frame, UInt32(VIO_TP_STATUS_KERNEL))
      rxIndex = rxIndex &+ 1 == rxFrames ? 0 : rxIndex &+ 1
    }
    stats.rxPackets &+= UInt64(n)
    stats.rxBytes &+= bytes
    return n
  }

  /// Copies the packets into TX frames in order and kicks once. The pool
  /// buffers of the packets taken go back to the pool at once (copied).
  package mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool) -> Int {
    let count = burst.count
    let room = frameSize &- Int(VIO_TP2_TX_DATA)
    var n = 0
    /// Taken but dropped (too long for the interface): in `n`, not in `txPackets`.
    var refused = 0
    var bytes: UInt64 = 0
    /// Taken and dropped, counted: a retry could never succeed.
    func refuse(_ b: PacketBuffer) {
      stats.txErrors &+= 1
      stats.txDropped &+= 1
      pool.release(b)
      n &+= 1
      refused &+= 1
    }
    while n < count {
      var b = burst[n]
      guard Int(b.index) < pool.count, b.length >= 14, Int(b.offset) &+ Int(b.length) <= pool.bufferSize else {
        stats.txErrors &+= 1
        break
      }
      // A GSO packet (from a port with GUEST_TSO4/6): cut in software, one ring frame per segment.
      if b.gsoType != 0 {
        switch sendSegmented(b, pool: &pool) {
        case .sent(let length):
          bytes &+= UInt64(length)
          n &+= 1
          continue
        case .ringFull:
          stats.txRingFull &+= UInt64(count &- n)
        case .refused:
          refuse(b)
          continue
        }
        break
      }
      // A chain is copied segment by segment into one frame.
      let length = b.isChained ? pool.packetSize(b).bytes : Int(b.length)
      // Longer than a ring frame, or what the kernel would refuse (tpacket_snd: -EMSGSIZE) and with
      // PACKET_LOSS skip uncounted: taken and dropped here, counted (a retry could never succeed).
      if length > room
        || (length > maxFrame && !(length <= maxFrame &+ 4 && Self.isVLAN(pool.pointer(b) + Int(b.offset))))
      {
        refuse(b)
        continue
      }
      let frame = tx + txIndex &* frameSize
      // SAFETY: txIndex < txFrames: the frame lies inside the mapped TX ring.
      let status = vio_pkt_load_acquire_u32(frame)
      if status & UInt32(VIO_TP_STATUS_SEND_REQUEST | VIO_TP_STATUS_SENDING) != 0 {
        stats.txRingFull &+= UInt64(count &- n)
        break
      }
      if status & UInt32(VIO_TP_STATUS_WRONG_FORMAT) != 0 { stats.txErrors &+= 1 }
      let data = pool.pointer(b) + Int(b.offset)
      if b.flags & PacketBuffer.needsChecksum != 0 {
        if b.isChained {
          _ = InternetChecksum.complete(chain: b, bytes: length, pool: pool)
        } else {
          InternetChecksum.complete(data: data, length: length, start: Int(b.csumStart), offset: Int(b.csumOffset))
        }
        b.flags &= ~PacketBuffer.needsChecksum
      }
      // SAFETY: length <= room: the copy, every segment of it, ends inside the frame.
      (frame + Int(VIO_TP2_TX_DATA)).copyMemory(from: data, byteCount: Int(b.length))
      var at = Int(b.length)
      var seg = b
      // A caller's segment outside its buffer ends the copy (the frame is then short, not out of bounds).
      while let s = pool.next(after: seg), at &+ Int(s.length) <= length, Int(s.offset) &+ Int(s.length) <= pool.bufferSize {
        (frame + Int(VIO_TP2_TX_DATA) + at).copyMemory(from: pool.pointer(s) + Int(s.offset), byteCount: Int(s.length))
        at &+= Int(s.length)
        seg = s
      }
      frame.storeBytes(of: UInt32(at), toByteOffset: Int(VIO_TP2_LEN), as: UInt32.self)
      vio_pkt_store_release_u32(frame, UInt32(VIO_TP_STATUS_SEND_REQUEST))
      pool.release(b)
      txIndex = txIndex &+ 1 == txFrames ? 0 : txIndex &+ 1
      bytes &+= UInt64(at)
      n &+= 1
    }
    stats.txPackets &+= UInt64(n &- refused)
    stats.txBytes &+= bytes
    if n > refused || kickPending { kick() }
    return n
  }

  enum SegmentedSend {
    case sent(bytes: Int)
    case ringFull
    case refused
  }

  /// Software segmentation onto the TX ring (`TCPSegmentation.PoolPacket`):
  /// every segment built straight into its own frame, once the ring has a
  /// frame for each (all or nothing); the packet's buffers go back to the
  /// pool. Refused: not TCP as its gso_type says, headers past its first
  /// buffer, or segments longer than the interface takes.
  mutating func sendSegmented(_ b: PacketBuffer, pool: inout BufferPool) -> SegmentedSend {
    guard var packet = TCPSegmentation.PoolPacket(b, pool: pool) else { return .refused }
    let k = packet.layout.segmentCount
    let largest = packet.layout.segmentLength(0)
    let vlan = Self.isVLAN(pool.pointer(b) + Int(b.offset))
    guard k <= txFrames, largest <= frameSize &- Int(VIO_TP2_TX_DATA), largest <= maxFrame &+ (vlan ? 4 : 0) else { return .refused }
    for j in 0..<k {
      // SAFETY: the index is taken mod txFrames: the frame lies inside the mapped TX ring.
      let status = vio_pkt_load_acquire_u32(tx + ((txIndex &+ j) % txFrames) &* frameSize)
      if status & UInt32(VIO_TP_STATUS_SEND_REQUEST | VIO_TP_STATUS_SENDING) != 0 { return .ringFull }
    }
    var bytes = 0
    for i in 0..<k {
      let frame = tx + txIndex &* frameSize
      let length = packet.layout.segmentLength(i)
      // SAFETY: length <= frameSize - TX_DATA (the largest segment, checked above): inside the frame.
      guard packet.write(segment: i, into: frame + Int(VIO_TP2_TX_DATA), pool: pool) else { return .refused }
      frame.storeBytes(of: UInt32(length), toByteOffset: Int(VIO_TP2_LEN), as: UInt32.self)
      vio_pkt_store_release_u32(frame, UInt32(VIO_TP_STATUS_SEND_REQUEST))
      txIndex = txIndex &+ 1 == txFrames ? 0 : txIndex &+ 1
      bytes &+= length
    }
    pool.release(b)
    stats.txSegmented &+= 1
    stats.txSegments &+= UInt64(k)
    return .sent(bytes: bytes)
  }

  /// An 802.1Q / 802.1ad tag after the MAC addresses (the kernel allows 4 more bytes then).
  static func isVLAN(_ frame: UnsafeRawPointer) -> Bool {
    let t = UInt16(frame.load(fromByteOffset: 12, as: UInt8.self)) << 8 | UInt16(frame.load(fromByteOffset: 13, as: UInt8.self))
    return t == 0x8100 || t == 0x88A8
  }

  /// TX frames still waiting for the kernel to take them (SEND_REQUEST): a
  /// kick that failed, or one not made yet. Scans the ring: control path only.
  func framesNotTaken() -> Int {
    var n = 0
    for i in 0..<txFrames {
      // SAFETY: i < txFrames: the frame lies inside the mapped TX ring.
      if vio_pkt_load_acquire_u32(tx + i &* frameSize) & UInt32(VIO_TP_STATUS_SEND_REQUEST) != 0 { n &+= 1 }
    }
    return n
  }

  /// The worker stops: kick until the kernel took every TX frame handed to it
  /// (at most `timeoutMilliseconds`, waiting for the socket to be writable
  /// between kicks), then count what it never took as dropped (out of
  /// `txPackets`), and RX frames left in the ring as `rxDropped` (the kernel
  /// delivered them to this socket, nobody will forward them).
  mutating func finish(timeoutMilliseconds: Int = 1000) {
    let deadline = monotonicNanoseconds() &+ UInt64(timeoutMilliseconds) &* 1_000_000
    var left = framesNotTaken()
    while left > 0 && monotonicNanoseconds() < deadline {
      kick()
      left = framesNotTaken()
      if left > 0 { _ = vio_pkt_wait_writable(fd, 10) }
    }
    if left > 0 {
      stats.txPackets &-= UInt64(min(UInt64(left), stats.txPackets))
      stats.txDropped &+= UInt64(left)
    }
    var unread: UInt64 = 0
    var i = rxIndex
    for _ in 0..<rxFrames {
      // SAFETY: i < rxFrames: the frame lies inside the mapped RX ring.
      let frame = rx + i &* frameSize
      guard vio_pkt_load_acquire_u32(frame) & UInt32(VIO_TP_STATUS_USER) != 0 else { break }
      unread &+= 1
      vio_pkt_store_release_u32(frame, UInt32(VIO_TP_STATUS_KERNEL))
      i = i &+ 1 == rxFrames ? 0 : i &+ 1
    }
    rxIndex = i
    // The RX ring's overflows since PortGroup.pollEvents last read them (the
    // read resets them; the socket closes with this queue, so read them now).
    stats.rxDropped &+= unread &+ kernelDrops()
  }

  /// send(fd, NULL, 0): the kernel transmits every SEND_REQUEST frame (the doorbell).
  mutating func kick() {
    let rc = vio_pkt_kick(fd)
    stats.notifications &+= 1
    kickPending = rc != 0
  }

  /// RX frames are waiting (the next frame belongs to user space).
  func pending() -> Bool {
    vio_pkt_load_acquire_u32(rx + rxIndex &* frameSize) & UInt32(VIO_TP_STATUS_USER) != 0
  }

  /// Frames the kernel dropped because the RX ring was full since the last call (PACKET_STATISTICS).
  func kernelDrops() -> UInt64 {
    var packets: UInt32 = 0
    var drops: UInt32 = 0
    return vio_pkt_statistics(fd, &packets, &drops) == 0 ? UInt64(drops) : 0
  }
}

extension PacketSocket {
  /// Takes a ring set up elsewhere; closing it unmaps `map` (nil: nothing) and closes `fd` (-1: nothing).
  /// `mtu`: the largest frame the simulated interface takes (default: a jumbo frame's).
  init(adopting ring: vio_pkt_ring, mtu: Int = 9216) {
    self.ring = ring
    self.mtu = mtu
  }
}
