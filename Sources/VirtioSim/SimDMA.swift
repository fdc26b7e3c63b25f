import Glibc
import Synchronization
import VirtioCore

// Simulated DMA memory. The driver sees pointers; the simulated device sees
// IOVAs in a separate address space (base 0x1_0000_0000 by default), exactly as
// it would behind an IOMMU, and must translate every address the driver hands
// it. An address outside every region is a driver bug the device reports.

/// The memory behind a `SimDMA`: one anonymous mapping, carved into regions in
/// ascending IOVA order, with an unmapped gap after each region so an overrun
/// translates to "unknown address" instead of the neighbouring region.
///
/// Shared by the owning `SimDMA` and every `SimIOMMU` view, so a device thread
/// that outlives the owner never reads unmapped memory; unmapped in deinit.
final class SimMemoryArena: @unchecked Sendable {
  let base: UnsafeMutableRawPointer
  let capacity: Int
  let iovaBase: UInt64
  let maxRegions: Int
  /// Region `i` spans arena offsets `[starts[i], ends[i])`. Entries below
  /// `regionCount` are immutable once published.
  let starts: UnsafeMutablePointer<Int>
  let ends: UnsafeMutablePointer<Int>
  /// Published with release after the entry is written; translators load it with acquire.
  let regionCount = Atomic<Int>(0)
  /// Bump offset; written only by the owning `SimDMA` (exclusive by `~Copyable`).
  var nextOffset = 0

  /// Bytes left unallocated after every region (a red zone).
  static let gap = 64

  init(capacity: Int, iovaBase: UInt64, maxRegions: Int) throws(VirtioError) {
    // SAFETY: an anonymous private mapping, zero-filled by the kernel, lazily
    // backed (MAP_NORESERVE), owned by this arena and unmapped in deinit.
    let p = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    guard let p, UInt(bitPattern: p) != UInt.max else {
      throw VirtioError(
        .dmaAllocation, "SimDMA: mmap of \(capacity) bytes failed (errno \(errno)); ask for a smaller capacity",
        errno: errno)
    }
    self.base = p
    self.capacity = capacity
    self.iovaBase = iovaBase
    self.maxRegions = maxRegions
    self.starts = .allocate(capacity: maxRegions)
    self.ends = .allocate(capacity: maxRegions)
  }

  deinit {
    munmap(base, capacity)
    starts.deallocate()
    ends.deallocate()
  }

  /// The arena offset of `[iova, iova + count)` when it lies inside one region.
  func offset(of iova: UInt64, count: Int) -> Int? {
    guard iova >= iovaBase, count >= 0 else { return nil }
    let delta = iova - iovaBase
    guard delta < UInt64(capacity) else { return nil }
    let off = Int(delta)
    let n = regionCount.load(ordering: .acquiring)
    // Last region whose start is <= off (regions are sorted by start).
    var lo = 0
    var hi = n
    while lo < hi {
      let mid = (lo + hi) / 2
      if starts[mid] <= off { lo = mid + 1 } else { hi = mid }
    }
    guard lo > 0 else { return nil }
    let r = lo - 1
    guard count <= ends[r] - off else { return nil }
    // A zero-length access must still point inside the region.
    if count == 0 && off >= ends[r] { return nil }
    return off
  }
}

/// A `DMAAllocator` for tests and benchmarks: zeroed, aligned memory whose
/// device-visible address (IOVA) differs from its pointer.
///
/// Owns its memory (`~Copyable`); the device side reaches it only through
/// `iommu`, which translates and bounds-checks every address. Regions are never
/// reused, so every allocation comes back zeroed.
public struct SimDMA: ~Copyable, DMAAllocator {
  let arena: SimMemoryArena

  /// The first IOVA handed out: far from any pointer this process uses, so a
  /// driver that hands the device a pointer instead of an IOVA is caught.
  public static let defaultIOVABase: UInt64 = 0x1_0000_0000

  /// `capacity` bytes of address space (reserved lazily; untouched pages cost nothing).
  public init(
    capacity: Int = 64 << 20, iovaBase: UInt64 = SimDMA.defaultIOVABase, maxRegions: Int = 1 << 16
  ) throws(VirtioError) {
    precondition(capacity > 0 && maxRegions > 0 && iovaBase & 0xFFF == 0, "SimDMA: bad geometry")
    arena = try SimMemoryArena(capacity: capacity, iovaBase: iovaBase, maxRegions: maxRegions)
  }

  public mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    guard byteCount > 0, alignment > 0, alignment & (alignment - 1) == 0 else {
      throw VirtioError(.invalidArgument, "SimDMA: allocate(\(byteCount) bytes, alignment \(alignment)) is not a valid request")
    }
    let a = arena
    let align = max(alignment, 16)
    let start = (a.nextOffset + align - 1) & ~(align - 1)
    let count = a.regionCount.load(ordering: .relaxed)
    guard start <= a.capacity - byteCount, count < a.maxRegions else {
      throw VirtioError(
        .dmaAllocation,
        "SimDMA: out of simulated DMA memory (\(a.nextOffset) of \(a.capacity) bytes used, \(count) regions); create it with a larger capacity"
      )
    }
    a.starts[count] = start
    a.ends[count] = start + byteCount
    // Release: the table entry is visible before a translator can count it.
    a.regionCount.store(count + 1, ordering: .releasing)
    a.nextOffset = start + byteCount + SimMemoryArena.gap
    // SAFETY: [start, start + byteCount) lies inside the mapping (checked above).
    return DMARegion(pointer: a.base + start, iova: a.iovaBase + UInt64(start), byteCount: byteCount)
  }

  /// The device's view of this memory.
  public var iommu: SimIOMMU { SimIOMMU(arena: arena) }

  /// Bytes handed out so far, alignment padding and red zones included.
  public var bytesUsed: Int { arena.nextOffset }
}

/// The device's view of `SimDMA` memory: IOVA → pointer, with bounds checks.
/// Cheap to copy; safe to use from the device thread while the owner allocates.
public struct SimIOMMU: Sendable {
  let arena: SimMemoryArena

  /// The pointer for `[iova, iova + count)`, or nil when the range is not
  /// entirely inside one allocated region (the driver gave the device a bad address).
  public func translate(_ iova: UInt64, count: Int) -> UnsafeMutableRawPointer? {
    guard let off = arena.offset(of: iova, count: count) else { return nil }
    // SAFETY: `off` and `off + count` lie inside an allocated region of the mapping.
    return arena.base + off
  }

  /// The IOVA of a pointer into this memory (for tests that poke ring memory).
  public func iova(of pointer: UnsafeRawPointer) -> UInt64? {
    let p = UInt(bitPattern: pointer)
    let b = UInt(bitPattern: arena.base)
    guard p >= b, p - b < UInt(arena.capacity) else { return nil }
    return arena.iovaBase + UInt64(p - b)
  }

  /// The first IOVA of the simulated address space.
  public var iovaBase: UInt64 { arena.iovaBase }
}

extension SimIOMMU {
  /// A ring area the driver programmed: aligned as the spec requires and
  /// translated whole, or the driver bug that it is not.
  func ringArea(_ area: RingArea, _ iova: UInt64, bytes: Int, alignment: Int) throws(DriverBug) -> UnsafeMutableRawPointer {
    guard iova % UInt64(alignment) == 0 else { throw .misalignedArea(area: area, iova: iova, alignment: alignment) }
    guard let p = translate(iova, count: bytes) else { throw .unknownAddress(area: area, iova: iova, length: UInt64(bytes)) }
    return p
  }
}
