import VirtioCore

/// DMA memory for fuzz targets: each region is its own heap allocation, so
/// AddressSanitizer puts red zones around it and any access outside a ring,
/// a table or a pool is reported — unlike one big mapping carved into
/// regions (VirtioSim's `SimDMA`), where an overrun lands in a neighbour.
/// The IOVA is the address itself: the simulated device reads and writes
/// through the same pointers. Regions are freed when the allocator goes.
public struct HeapDMA: ~Copyable, DMAAllocator {
  var regions: [UnsafeMutableRawPointer] = []

  public init() {}

  public mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    // SAFETY: a fresh allocation, zeroed here, released once in deinit.
    let p = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: max(alignment, 1))
    p.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
    regions.append(p)
    return DMARegion(pointer: p, iova: UInt64(UInt(bitPattern: p)), byteCount: byteCount)
  }

  deinit {
    for p in regions { p.deallocate() }
  }
}

extension UInt64 {
  /// The pointer a `HeapDMA` IOVA stands for.
  public var heapPointer: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: UInt(self))! }
}
