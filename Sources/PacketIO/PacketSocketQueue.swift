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
    var bytes: UInt64 = 0
    while n < count {
      var b = burst[n]
      guard Int(b.index) < pool.count, b.length > 0, Int(b.offset) &+ Int(b.length) <= pool.bufferSize, Int(b.length) <= room else {
        stats.txErrors &+= 1
        break
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
        InternetChecksum.complete(data: data, length: Int(b.length), start: Int(b.csumStart), offset: Int(b.csumOffset))
        b.flags &= ~PacketBuffer.needsChecksum
      }
      // SAFETY: length <= room: the copy ends inside the frame.
      (frame + Int(VIO_TP2_TX_DATA)).copyMemory(from: data, byteCount: Int(b.length))
      frame.storeBytes(of: UInt32(b.length), toByteOffset: Int(VIO_TP2_LEN), as: UInt32.self)
      vio_pkt_store_release_u32(frame, UInt32(VIO_TP_STATUS_SEND_REQUEST))
      pool.release(b)
      txIndex = txIndex &+ 1 == txFrames ? 0 : txIndex &+ 1
      bytes &+= UInt64(b.length)
      n &+= 1
    }
    stats.txPackets &+= UInt64(n)
    stats.txBytes &+= bytes
    if n > 0 || kickPending { kick() }
    return n
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
  init(adopting ring: vio_pkt_ring) { self.ring = ring }
}
