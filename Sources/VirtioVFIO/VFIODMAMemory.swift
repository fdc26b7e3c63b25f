import VirtioCore

/// The DMA memory of one VFIO container: mapped into the IOMMU (`DMAArena`,
/// IOVAs), or — VFIO's no-IOMMU mode, which has no DMA map ioctl — locked
/// hugepages addressed physically (`PhysicalDMAArena`, the same arena the
/// uio path uses). Control path only: rings and pools are carved here once.
public enum VFIODMAMemory: ~Copyable, DMAAllocator {
  case iommu(DMAArena)
  case physical(PhysicalDMAArena)

  public mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    // A noncopyable payload is mutated by taking it out and putting it back.
    switch consume self {
    case .iommu(var arena):
      do {
        let region = try arena.allocate(byteCount: byteCount, alignment: alignment)
        self = .iommu(arena)
        return region
      } catch {
        self = .iommu(arena)
        throw error
      }
    case .physical(var arena):
      do {
        let region = try arena.allocate(byteCount: byteCount, alignment: alignment)
        self = .physical(arena)
        return region
      } catch {
        self = .physical(arena)
        throw error
      }
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
