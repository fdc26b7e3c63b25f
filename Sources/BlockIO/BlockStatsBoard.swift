import CBlockSys

/// Per-queue metrics a queue's thread publishes and a monitoring thread reads,
/// without locks: one `BlockQueueMetrics` slot per queue, written word by word
/// with relaxed atomic stores by the slot's one writer and read with relaxed
/// loads (a reader may see one counter a request ahead of another; counters
/// only grow). Publishing copies a few hundred bytes: do it every few
/// milliseconds or batches, not per request. Make the board before the
/// threads, drop it after they are joined.
public struct BlockStatsBoard: ~Copyable, @unchecked Sendable {
  static let words = MemoryLayout<BlockQueueMetrics>.size / 8
  let base: UnsafeMutableRawPointer
  public let slots: Int

  public init(slots: Int) {
    precondition(MemoryLayout<BlockQueueMetrics>.size % 8 == 0 && slots >= 0)
    let bytes = max(slots, 1) * MemoryLayout<BlockQueueMetrics>.size
    // SAFETY: zeroed, 64-byte aligned room for `slots` metrics; freed in deinit,
    // which the owner reaches only after every writer is done.
    base = .allocate(byteCount: bytes, alignment: 64)
    base.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    self.slots = slots
  }

  deinit { base.deallocate() }

  /// The writer's handle to slot `i` (a plain pointer: the board outlives every writer).
  public func slot(_ i: Int) -> BlockStatsSlot {
    precondition(i >= 0 && i < slots)
    return BlockStatsSlot(base: base + i * MemoryLayout<BlockQueueMetrics>.size)
  }

  /// Slot `i` as last published.
  public func read(_ i: Int) -> BlockQueueMetrics { slot(i).read() }
}

/// One queue's published metrics.
public struct BlockStatsSlot: BitwiseCopyable, @unchecked Sendable {
  let base: UnsafeMutableRawPointer

  /// Writer side: copies `m` word by word (relaxed stores, no allocation).
  public func publish(_ m: BlockQueueMetrics) {
    withUnsafeBytes(of: m) { raw in
      for w in 0..<BlockStatsBoard.words {
        // SAFETY: w * 8 < the size of one BlockQueueMetrics, inside the slot and the source.
        vio_blk_store_relaxed_u64(base + w &* 8, raw.loadUnaligned(fromByteOffset: w &* 8, as: UInt64.self))
      }
    }
  }

  /// Reader side.
  public func read() -> BlockQueueMetrics {
    var m = BlockQueueMetrics()
    withUnsafeMutableBytes(of: &m) { raw in
      for w in 0..<BlockStatsBoard.words {
        // SAFETY: as in publish.
        raw.storeBytes(of: vio_blk_load_relaxed_u64(base + w * 8), toByteOffset: w * 8, as: UInt64.self)
      }
    }
    return m
  }
}
