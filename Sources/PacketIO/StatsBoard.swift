internal import CPacketSys
import VirtioNet

/// Per-queue counters a worker publishes and the main thread reads, without
/// locks: one slot of `NetQueueStats` per (port, queue), written field by field
/// with relaxed atomic stores by the slot's one writer and read with relaxed
/// loads (a reader may see one field a burst ahead of another; counters only grow).
struct StatsBoard: ~Copyable {
  static let words = MemoryLayout<NetQueueStats>.size / 8
  let base: UnsafeMutableRawPointer
  let slots: Int

  init(slots: Int) {
    precondition(MemoryLayout<NetQueueStats>.size % 8 == 0 && MemoryLayout<NetQueueStats>.stride == MemoryLayout<NetQueueStats>.size)
    // SAFETY: zeroed, 64-byte aligned, `slots` NetQueueStats; freed in deinit,
    // after every writer (worker) has been joined.
    let bytes = max(slots, 1) * MemoryLayout<NetQueueStats>.stride
    base = .allocate(byteCount: bytes, alignment: 64)
    base.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    self.slots = slots
  }

  deinit { base.deallocate() }

  func slot(_ i: Int) -> StatsSlot {
    precondition(i >= 0 && i < slots)
    return StatsSlot(base: base + i * MemoryLayout<NetQueueStats>.stride)
  }
}

/// One queue's published counters. A plain pointer: the board outlives every writer.
struct StatsSlot: BitwiseCopyable {
  let base: UnsafeMutableRawPointer

  /// Writer side: copies `s` word by word (relaxed stores, no allocation).
  func publish(_ s: NetQueueStats) {
    withUnsafeBytes(of: s) { raw in
      for w in 0..<(MemoryLayout<NetQueueStats>.size / 8) {
        // SAFETY: w * 8 < size of one NetQueueStats, inside the slot and the source.
        vio_pkt_store_relaxed_u64(base + w &* 8, raw.loadUnaligned(fromByteOffset: w &* 8, as: UInt64.self))
      }
    }
  }

  /// Reader side.
  func read() -> NetQueueStats {
    var s = NetQueueStats()
    withUnsafeMutableBytes(of: &s) { raw in
      for w in 0..<(MemoryLayout<NetQueueStats>.size / 8) {
        raw.storeBytes(of: vio_pkt_load_relaxed_u64(base + w * 8), toByteOffset: w * 8, as: UInt64.self)
      }
    }
    return s
  }
}
