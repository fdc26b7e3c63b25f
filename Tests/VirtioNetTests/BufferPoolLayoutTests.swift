import VirtioCore
import VirtioSim
import XCTest

/// Where a pool puts its buffers: an odd number of cache lines apart by
/// default, so that the lines a driver and a device touch per packet spread
/// over every cache set instead of a few.
final class BufferPoolLayoutTests: XCTestCase {
  func testDefaultStrideIsAnOddNumberOfLines() throws {
    var dma = try SimDMA()
    for (size, stride) in [(2048, 2112), (2112, 2112), (2000, 2112), (4096, 4160), (9000, 9024), (65536, 65600)] {
      let pool = try BufferPool(count: 4, bufferSize: size, headroom: 64, memory: &dma)
      XCTAssertEqual(pool.stride, stride, "bufferSize \(size)")
      XCTAssertEqual(pool.bufferSize, (size + 63) & ~63, "usable bytes stay what was asked, rounded to 64")
    }
  }

  func testBuffersTileTheRegionWithoutOverlap() throws {
    var dma = try SimDMA()
    let pool = try BufferPool(count: 100, bufferSize: 2048, headroom: 64, memory: &dma)
    XCTAssertGreaterThanOrEqual(pool.region.byteCount, 100 * pool.stride)
    var previousEnd: UInt64 = pool.region.iova
    for i in 0..<100 {
      let b = PacketBuffer(index: UInt32(i), offset: 64, length: 0)
      XCTAssertEqual(pool.iova(b), pool.region.iova + UInt64(i * pool.stride))
      XCTAssertEqual(pool.pointer(b), pool.region.pointer + i * pool.stride)
      XCTAssertGreaterThanOrEqual(pool.iova(b), previousEnd, "buffer \(i) overlaps the one before")
      previousEnd = pool.iova(b) + UInt64(pool.bufferSize)
    }
    XCTAssertLessThanOrEqual(previousEnd, pool.region.iova + UInt64(pool.region.byteCount))
  }

  func testConsecutiveBuffersStartInDistinctCacheSets() throws {
    var dma = try SimDMA()
    // 64 sets of 64-byte lines: a 4 KiB way, as in an x86 L1 data cache.
    func sets(_ pool: borrowing BufferPool) -> Int {
      Set((0..<64).map { i in (pool.iova(PacketBuffer(index: UInt32(i), offset: 0, length: 0)) >> 6) & 63 }).count
    }
    let spread = try BufferPool(count: 64, bufferSize: 2048, headroom: 64, memory: &dma)
    XCTAssertEqual(sets(spread), 64)
    let packed = try BufferPool(count: 64, bufferSize: 2048, headroom: 64, stride: 2048, memory: &dma)
    XCTAssertEqual(packed.stride, 2048, "an explicit stride is kept")
    XCTAssertEqual(sets(packed), 2, "the power-of-two layout this default replaces")
  }

  /// A block comes off the top of the free stack in the order its buffers
  /// were released (`allocate` pops the other way); what is not used goes
  /// back in its order; a block never takes more than the pool holds.
  func testBlockTakesTheTopInReleaseOrder() throws {
    var dma = try SimDMA()
    var pool = try BufferPool(count: 6, bufferSize: 2048, headroom: 64, memory: &dma)
    var out: [PacketBuffer] = []
    while let b = pool.allocate() { out.append(b) }
    for i in [2, 0, 5, 3] { pool.release(out[i]) }
    XCTAssertEqual(pool.takeBlock(upTo: 3), 3)
    XCTAssertEqual((0..<3).map { pool.blockBuffer($0).index }, [out[0].index, out[5].index, out[3].index])
    XCTAssertEqual(pool.blockBuffer(0).offset, 64)
    pool.endBlock(used: 1, taken: 3)
    XCTAssertEqual(pool.available, 3)
    XCTAssertEqual((0..<3).compactMap { _ in pool.allocate()?.index }, [out[3].index, out[5].index, out[2].index])
    for i in [1, 4] { pool.release(out[i]) }
    XCTAssertEqual(pool.takeBlock(upTo: 10), 2, "no more than the pool holds")
    pool.endBlock(used: 2, taken: 2)
    XCTAssertEqual(pool.available, 0)
    XCTAssertEqual(pool.takeBlock(upTo: -1), 0)
    XCTAssertNil(pool.allocate())
  }

  func testBadStridesAreRefused() throws {
    var dma = try SimDMA()
    // The error a pool of `count` 2048-byte buffers `stride` bytes apart is refused with, or nil.
    func refusal(stride: Int, count: Int = 4) -> VirtioError? {
      do {
        _ = try BufferPool(count: count, bufferSize: 2048, headroom: 64, stride: stride, memory: &dma)
        return nil
      } catch {
        return error
      }
    }
    for stride in [1024, 2100, 0, -64] {
      XCTAssertEqual(refusal(stride: stride)?.code, .invalidArgument, "stride \(stride)")
    }
    XCTAssertEqual(refusal(stride: Int.max & ~63, count: 1 << 30)?.code, .invalidArgument, "stride × count overflows")
    XCTAssertNil(refusal(stride: 4096))
  }
}
