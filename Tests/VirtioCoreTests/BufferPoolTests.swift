import VirtioCore
import VirtioSim
import XCTest

/// Buffer spacing: an odd number of cache lines, buffers never overlap, and
/// every handle's memory lies inside the pool's region.
final class BufferPoolTests: XCTestCase {
  func testStrideIsAnOddNumberOfLines() {
    XCTAssertEqual(BufferPool.stride(bufferSize: 2048), 2112, "32 lines → 33")
    XCTAssertEqual(BufferPool.stride(bufferSize: 2000), 2112, "rounded to 2048 first")
    XCTAssertEqual(BufferPool.stride(bufferSize: 2112), 2112, "33 lines already")
    XCTAssertEqual(BufferPool.stride(bufferSize: 64), 64)
    for size in stride(from: 65, through: 9300, by: 97) {
      let s = BufferPool.stride(bufferSize: size)
      XCTAssertGreaterThanOrEqual(s, size)
      XCTAssertEqual(s % 64, 0)
      XCTAssertEqual((s / 64) % 2, 1, "size \(size)")
    }
  }

  func testBuffersAreSpreadOverCacheSets() throws {
    var dma = try SimDMA()
    var pool = try BufferPool(count: 256, bufferSize: 2048, headroom: 64, memory: &dma)
    XCTAssertEqual(pool.bufferSize, 2048)
    XCTAssertEqual(pool.region.byteCount, 256 * 2112)
    var sets = Set<Int>()
    var starts: [Int] = []
    while let b = pool.allocate() {
      let offset = pool.pointer(b) - pool.region.pointer
      XCTAssertEqual(UInt64(offset), pool.iova(b) - pool.region.iova)
      XCTAssertLessThanOrEqual(offset + pool.bufferSize, pool.region.byteCount)
      starts.append(offset)
      // The header line (the one before the data) of each buffer: which of 64 L1 sets.
      sets.insert(((offset + Int(b.offset) - 12) / 64) % 64)
    }
    starts.sort()
    for (a, b) in zip(starts, starts.dropFirst()) { XCTAssertGreaterThanOrEqual(b - a, pool.bufferSize, "buffers overlap") }
    XCTAssertEqual(sets.count, 64, "256 header lines over every set (a 2048-byte stride would use 2)")
  }
}
