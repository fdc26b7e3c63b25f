import Glibc
import Logging
import VirtioCore
import VirtioOS

internal import CVirtioSys

/// Which pages back the DMA arena.
public enum HugePagePolicy: Sendable {
  /// 2 MiB hugetlb pages when the kernel has free ones, else 4 KiB pages.
  case preferred
  /// 2 MiB hugetlb pages or fail (reserve them: /proc/sys/vm/nr_hugepages).
  case required
  /// 4 KiB pages only.
  case disabled
}

/// DMA memory for one VFIO container: large chunks of pinned memory (2 MiB
/// hugetlb pages when available, else 4 KiB pages), each mapped once with
/// VFIO_IOMMU_MAP_DMA at an IOVA from a bump allocator, and carved into the
/// regions the rings and buffers ask for. Mapping in big chunks keeps the
/// number of IOMMU mappings far below vfio_iommu_type1's dma_entry_limit.
/// Everything is unmapped and released exactly once, when the arena goes away.
///
/// The device sees only IOVAs from here: with ACCESS_PLATFORM negotiated it
/// translates them through the IOMMU, so nothing else in the process is
/// reachable by the device.
public struct DMAArena: ~Copyable, DMAAllocator {
  struct Chunk {
    var pointer: UnsafeMutableRawPointer
    var iova: UInt64
    var size: Int
    var huge: Bool
  }

  /// The container's descriptor, borrowed: the owner (VFIOPCITransport)
  /// declares the arena before the container so the arena is released first.
  let containerFD: Int32
  let policy: HugePagePolicy
  /// Size of each mapping (a multiple of 2 MiB).
  public let chunkSize: Int
  private var chunks: [Chunk] = []
  /// Bump position inside the last chunk.
  private var used: Int = 0
  private var iovaCursor: UInt64
  private let iovaRanges: [ClosedRange<UInt64>]
  private let logger: Logger

  static let hugePageSize = 2 << 20

  init(containerFD: Int32, info: VFIOIOMMUInfo, policy: HugePagePolicy, chunkSize: Int, logger: Logger) {
    self.containerFD = containerFD
    self.policy = policy
    self.chunkSize = max(Self.hugePageSize, (chunkSize + Self.hugePageSize - 1) & ~(Self.hugePageSize - 1))
    self.logger = logger
    // IOVAs the container accepts; without that information, a window from
    // 4 GiB up (past the x86 MSI window at 0xFEE00000, inside a 39-bit vIOMMU).
    let ranges = info.iovaRanges.isEmpty ? [UInt64(1) << 32...(UInt64(1) << 39) - 1] : info.iovaRanges
    self.iovaRanges = ranges
    // Start at 1 MiB or later: IOVA 0 works, but a zero address in a descriptor is a classic bug to spot.
    self.iovaCursor = max(ranges[0].lowerBound, 1 << 20)
  }

  /// Bytes mapped for the device (all chunks).
  public var mappedBytes: Int { chunks.reduce(0) { $0 + $1.size } }
  /// Number of VFIO DMA mappings held.
  public var mappingCount: Int { chunks.count }
  /// True when every chunk so far is backed by 2 MiB pages.
  public var usesHugePages: Bool { !chunks.isEmpty && chunks.allSatisfy(\.huge) }

  /// Zeroed memory of `byteCount` bytes aligned to `alignment`, mapped for the device.
  public mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    guard byteCount > 0, alignment > 0, alignment & (alignment - 1) == 0, alignment <= Self.hugePageSize else {
      throw VirtioError(.invalidArgument, "DMA allocation of \(byteCount) bytes aligned to \(alignment): size must be > 0 and alignment a power of two ≤ 2 MiB")
    }
    if let last = chunks.last {
      let start = (used + alignment - 1) & ~(alignment - 1)
      if start + byteCount <= last.size {
        used = start + byteCount
        return DMARegion(pointer: last.pointer + start, iova: last.iova + UInt64(start), byteCount: byteCount)
      }
    }
    let size = max(chunkSize, (byteCount + Self.hugePageSize - 1) & ~(Self.hugePageSize - 1))
    let chunk = try mapChunk(size: size)
    chunks.append(chunk)
    used = byteCount
    return DMARegion(pointer: chunk.pointer, iova: chunk.iova, byteCount: byteCount)
  }

  /// Next free IOVA window of `size` bytes (2 MiB aligned) inside the accepted ranges.
  private mutating func takeIOVA(_ size: Int) throws(VirtioError) -> UInt64 {
    let align = UInt64(Self.hugePageSize)
    for r in iovaRanges {
      let start = max(iovaCursor, r.lowerBound)
      let aligned = (start + align - 1) & ~(align - 1)
      if aligned >= r.lowerBound, aligned <= r.upperBound, r.upperBound - aligned >= UInt64(size) - 1 {
        iovaCursor = aligned + UInt64(size)
        return aligned
      }
    }
    throw VirtioError(.dmaAllocation, "the IOMMU has no free IOVA window of \(size) bytes left (ranges \(iovaRanges.map { "0x\(String($0.lowerBound, radix: 16))-0x\(String($0.upperBound, radix: 16))" }))")
  }

  private mutating func mapChunk(size: Int) throws(VirtioError) -> Chunk {
    var huge = false
    var memory: UnsafeMutableRawPointer? = nil
    if policy != .disabled {
      // SAFETY: a fresh private anonymous mapping, owned by this arena until deinit.
      let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | VIO_MAP_HUGE_2MB | MAP_POPULATE, -1, 0)
      if let p, p != MAP_FAILED {
        memory = p
        huge = true
      } else if policy == .required {
        let e = Glibc.errno
        logger.error("DMA hugepage allocation failed", metadata: ["step": "dma-map", "bytes": "\(size)", "errno": "\(e)"])
        throw VirtioError(
          .dmaAllocation,
          "no free 2 MiB hugepages for \(size >> 20) MiB of DMA memory (\(Sys.errnoText(e))); reserve some: echo 64 > /proc/sys/vm/nr_hugepages",
          errno: e)
      }
    }
    if memory == nil {
      // SAFETY: as above, 4 KiB pages; MAP_POPULATE faults them in before pinning.
      let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
      guard let p, p != MAP_FAILED else {
        let e = Glibc.errno
        logger.error("DMA memory allocation failed", metadata: ["step": "dma-map", "bytes": "\(size)", "errno": "\(e)"])
        throw VirtioError(.dmaAllocation, "cannot allocate \(size) bytes for DMA: \(Sys.errnoText(e))", errno: e)
      }
      memory = p
    }
    let pointer = memory!
    let iova: UInt64
    do {
      iova = try takeIOVA(size)
    } catch {
      munmap(pointer, size)
      throw error
    }
    var map = vfio_iommu_type1_dma_map()
    map.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_map>.size)
    map.flags = VIO_VFIO_DMA_MAP_FLAG_READ | VIO_VFIO_DMA_MAP_FLAG_WRITE
    map.vaddr = UInt64(UInt(bitPattern: pointer))
    map.iova = iova
    map.size = UInt64(size)
    do {
      _ = try Sys.ioctl(containerFD, VIO_VFIO_IOMMU_MAP_DMA, &map, "VFIO_IOMMU_MAP_DMA")
    } catch {
      munmap(pointer, size)
      let err = Self.mapError(error, size: size)
      logger.error(
        "VFIO_IOMMU_MAP_DMA failed",
        metadata: ["step": "dma-map", "iova": "0x\(String(iova, radix: 16))", "bytes": "\(size)", "reason": "\(err.message)"])
      throw err
    }
    logger.debug(
      "DMA chunk mapped",
      metadata: [
        "iova": "0x\(String(iova, radix: 16))", "bytes": "\(size)", "pages": "\(huge ? "2MiB" : "4KiB")",
        "mappings": "\(chunks.count + 1)",
      ])
    return Chunk(pointer: pointer, iova: iova, size: size, huge: huge)
  }

  static func mapError(_ e: SysError, size: Int) -> VirtioError {
    switch e.errno {
    case ENOMEM, EPERM:
      let limit = Sys.memlockLimit().map { "\($0 / 1024) KiB" } ?? "unlimited"
      return VirtioError(
        .memlockLimit,
        "VFIO could not pin \(size >> 10) KiB of DMA memory (\(e.reason)); the locked-memory limit is \(limit): raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd unit, or memlock in /etc/security/limits.conf)",
        errno: e.errno)
    case ENOSPC:
      return VirtioError(
        .dmaAllocation,
        "VFIO refused another DMA mapping (dma_entry_limit reached); raise it (modprobe vfio_iommu_type1 dma_entry_limit=…) or use hugepages so fewer mappings are needed",
        errno: e.errno)
    default:
      return VirtioError(.dmaAllocation, "VFIO_IOMMU_MAP_DMA of \(size) bytes failed: \(e.reason)", errno: e.errno)
    }
  }

  deinit {
    for c in chunks {
      var unmap = vfio_iommu_type1_dma_unmap()
      unmap.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_unmap>.size)
      unmap.iova = c.iova
      unmap.size = UInt64(c.size)
      _ = try? Sys.ioctl(containerFD, VIO_VFIO_IOMMU_UNMAP_DMA, &unmap, "VFIO_IOMMU_UNMAP_DMA")
      // SAFETY: the device can no longer reach the chunk (unmapped above, and
      // the owner reset the device first), so the memory can go.
      munmap(c.pointer, c.size)
    }
  }
}
