import VirtioCore

/// Plain process memory standing in for DMA memory: the "device" is a thread of
/// this process, so an IOVA is simply the address.
public struct BenchDMA: ~Copyable, DMAAllocator {
  private var regions: [UnsafeMutableRawPointer] = []

  public init() {}

  public mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    // SAFETY: a fresh allocation owned by this arena until deinit.
    let p = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: max(alignment, 16))
    p.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
    regions.append(p)
    return DMARegion(pointer: p, iova: UInt64(UInt(bitPattern: p)), byteCount: byteCount)
  }

  deinit { for p in regions { p.deallocate() } }
}
