import VirtioCore

/// The DMA memory of one VFIO container: mapped into the IOMMU (`DMAArena`,
/// IOVAs), or — VFIO's no-IOMMU mode, which has no DMA map ioctl — locked
/// hugepages addressed physically (`PhysicalDMAArena`, the same arena the
/// uio path uses). Control path only: rings and pools are carved here once.
public enum VFIODMAMemory: ~Copyable, DMAAllocator {
  case iommu(DMAArena)
  case physical(PhysicalDMAArena)

  public mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    // A noncopyable payload is mutated by taking it out and putting it back,
    // whether the allocation worked or not.
    switch consume self {
    case .iommu(var arena):
      let region = Self.allocate(from: &arena, byteCount, alignment)
      self = .iommu(arena)
      return try region.get()
    case .physical(var arena):
      let region = Self.allocate(from: &arena, byteCount, alignment)
      self = .physical(arena)
      return try region.get()
    }
  }

  private static func allocate<A: DMAAllocator & ~Copyable>(
    from arena: inout A, _ byteCount: Int, _ alignment: Int
  ) -> Result<DMARegion, VirtioError> {
    do throws(VirtioError) {
      return .success(try arena.allocate(byteCount: byteCount, alignment: alignment))
    } catch {
      return .failure(error)
    }
  }

  /// What the device is given: IOVAs or physical addresses.
  public var addressing: DMAAddressing {
    switch self {
    case .iommu: .iommu
    case .physical: .physical
    }
  }

  /// Bytes of memory held for DMA.
  public var mappedBytes: Int {
    switch self {
    case .iommu(let a): a.mappedBytes
    case .physical(let a): a.mappedBytes
    }
  }

  /// IOMMU mappings (no-IOMMU: chunks of hugepages).
  public var mappingCount: Int {
    switch self {
    case .iommu(let a): a.mappingCount
    case .physical(let a): a.chunkCount
    }
  }

  /// 2 MiB hugepages back the memory (always in no-IOMMU mode).
  public var usesHugePages: Bool {
    switch self {
    case .iommu(let a): a.usesHugePages
    case .physical: true
    }
  }
}
