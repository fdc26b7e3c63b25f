/// A range of memory both the driver (through `pointer`) and the device
/// (through `iova`) can reach. A plain view: whoever allocated it owns it and
/// releases it (a VFIO DMA arena unmaps on close; a test arena frees on deinit).
@frozen public struct DMARegion: BitwiseCopyable, @unchecked Sendable {
  public let pointer: UnsafeMutableRawPointer
  public let iova: UInt64
  public let byteCount: Int

  @inlinable public init(pointer: UnsafeMutableRawPointer, iova: UInt64, byteCount: Int) {
    self.pointer = pointer
    self.iova = iova
    self.byteCount = byteCount
  }

  /// The sub-range `[offset, offset + count)`.
  @inlinable public func slice(offset: Int, count: Int) -> DMARegion {
    precondition(offset >= 0 && count >= 0 && offset + count <= byteCount, "DMA slice out of range")
    return DMARegion(pointer: pointer + offset, iova: iova + UInt64(offset), byteCount: count)
  }
}

/// Hands out DMA-capable memory. The transport provides it (VFIO maps pages
/// through the IOMMU); the ring core and drivers take memory only from here.
public protocol DMAAllocator: ~Copyable {
  /// Zeroed memory of at least `byteCount` bytes aligned to `alignment` (a power of two).
  mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion
}
