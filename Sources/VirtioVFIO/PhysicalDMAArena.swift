import Glibc
import Logging
import VirtioCore
import VirtioOS

internal import CVirtioSys

/// DMA memory for a device that sees guest-physical addresses (no IOMMU:
/// uio_pci_generic, or VFIO's no-IOMMU mode): 2 MiB hugetlb pages — their
/// physical address never changes while they are mapped and locked — each
/// page's address read from `/proc/self/pagemap` and checked. The pages of a
/// chunk are mapped in physical-address order, so a region never spans two
/// pages that are not physically adjacent: its IOVA (the physical address of
/// its first byte) is valid for every byte of it.
///
/// There is no IOMMU behind this memory: a wrong address in a descriptor
/// reaches whatever memory it names. That is why the path is an explicit
/// opt-in (`allowNoIOMMU`).
public struct PhysicalDMAArena: ~Copyable, DMAAllocator {
  struct Chunk {
    var pointer: UnsafeMutableRawPointer
    var size: Int
    /// Physically contiguous runs, in bytes from `pointer`, with the physical address of their start.
    var runs: [(offset: Int, length: Int, physical: UInt64)]
  }

  public static let pageSize = 2 << 20
  /// Pages per chunk (at least what one allocation needs).
  public let chunkSize: Int
  private var chunks: [Chunk] = []
  /// Bump position: run `run` of the last chunk, `used` bytes into it.
  private var run = 0
  private var used = 0
  private let logger: Logger

  public init(chunkSize: Int = 4 << 20, logger: Logger) {
    self.chunkSize = max(Self.pageSize, (chunkSize + Self.pageSize - 1) & ~(Self.pageSize - 1))
    self.logger = logger
  }

  /// Bytes of hugepages held.
  public var mappedBytes: Int { chunks.reduce(0) { $0 + $1.size } }
  public var chunkCount: Int { chunks.count }

  /// Zeroed memory (fresh hugetlb pages, never handed out twice) of
  /// `byteCount` bytes aligned to `alignment`, physically contiguous.
  public mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    guard byteCount > 0, alignment > 0, alignment & (alignment - 1) == 0, alignment <= Self.pageSize else {
      throw VirtioError(.invalidArgument, "DMA allocation of \(byteCount) bytes aligned to \(alignment): size must be > 0 and alignment a power of two ≤ 2 MiB")
    }
    if let r = take(byteCount, alignment) { return r }
    let size = max(chunkSize, (byteCount + Self.pageSize - 1) & ~(Self.pageSize - 1))
    chunks.append(try mapChunk(size: size))
    run = 0
    used = 0
    if let r = take(byteCount, alignment) { return r }
    let runs = chunks[chunks.count - 1].runs.map { "\($0.length >> 20) MiB" }.joined(separator: ", ")
    throw VirtioError(
      .dmaAllocation,
      "no \((byteCount + Self.pageSize - 1) >> 21) physically contiguous 2 MiB hugepages for a \(byteCount >> 10) KiB DMA region (the free hugepages form runs of \(runs)); reserve hugepages at boot (hugepages= on the kernel command line), when memory is not yet fragmented, or use smaller rings and pools")
  }

  /// The next fit in the current chunk's runs (nil: none left).
  private mutating func take(_ byteCount: Int, _ alignment: Int) -> DMARegion? {
    guard let chunk = chunks.last else { return nil }
    while run < chunk.runs.count {
      let r = chunk.runs[run]
      // Physical and virtual offsets agree inside a run (both 2 MiB aligned at its start).
      let start = (used + alignment - 1) & ~(alignment - 1)
      if start + byteCount <= r.length {
        used = start + byteCount
        return DMARegion(pointer: chunk.pointer + r.offset + start, iova: r.physical + UInt64(start), byteCount: byteCount)
      }
      run += 1
      used = 0
    }
    return nil
  }

  /// Batches the free hugepages may hand out fragmented: a chunk gathers up
  /// to this many batches of the size asked for while none of its runs is long enough.
  static let gatherBatches = 4

  /// Hugetlb pages holding a physically contiguous run of `size` bytes: a
  /// batch of `size` bytes from a hugetlb memfd (populated, locked, each
  /// page's physical address read), more batches while no run is long
  /// enough (bounded), then every page gathered mapped again in physical order.
  private func mapChunk(size: Int) throws(VirtioError) -> Chunk {
    let wanted = size / Self.pageSize
    let pagemap: Int32
    do {
      pagemap = try Sys.open(Pagemap.path, O_RDONLY)
    } catch {
      throw fail(
        VirtioError(
          .permissionDenied,
          "cannot read \(Pagemap.path) (\(error.reason)): the no-IOMMU path needs each DMA page's physical address; run as root (CAP_SYS_ADMIN) on a kernel with CONFIG_PROC_PAGE_MONITOR",
          errno: error.errno))
    }
    defer { Sys.close(pagemap) }
    // The memfds hold the pages until the final mapping below has them.
    var fds: [Int32] = []
    defer { for fd in fds { Sys.close(fd) } }
    var pages: [(fd: Int32, index: Int, physical: UInt64)] = []
    for batch in 0..<Self.gatherBatches {
      let fd = Sys.memfd("vio-dma-noiommu", size: size, hugetlb: true)
      guard fd >= 0 else {
        let e = Glibc.errno
        if batch > 0 { break }  // use what was gathered; allocate() says which runs it found
        throw fail(VirtioError(.dmaAllocation, Self.hugePageShortage(size, "memfd_create(MFD_HUGETLB): \(Sys.errnoText(e))"), errno: e))
      }
      fds.append(fd)
      // SAFETY: the whole memfd, shared (its pages are mapped again below at
      // other addresses); MAP_POPULATE takes the hugepages now, so a shortage
      // fails here rather than as SIGBUS on first touch.
      guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0), p != MAP_FAILED else {
        let e = Glibc.errno
        if batch > 0 { break }
        throw fail(VirtioError(.dmaAllocation, Self.hugePageShortage(size, "mmap: \(Sys.errnoText(e))"), errno: e))
      }
      do throws(VirtioError) {
        try lock(p, size)
        let physical = try Self.physicalAddresses(p, pages: wanted, pagemap: pagemap)
        for (i, a) in physical.enumerated() { pages.append((fd, i, a)) }
      } catch {
        munmap(p, size)
        throw fail(error)
      }
      munmap(p, size)
      let sorted = pages.map(\.physical).sorted()
      if Pagemap.contiguousRuns(sorted, pageSize: Self.pageSize).contains(where: { $0.count >= wanted }) { break }
    }
    // Physical order: page i of the final mapping is the i-th lowest frame.
    pages.sort { $0.physical < $1.physical }
    let total = pages.count * Self.pageSize
    let pointer: UnsafeMutableRawPointer
    do throws(VirtioError) {
      pointer = try Self.remap(pages.map { ($0.fd, $0.index) }, size: total)
    } catch {
      throw fail(error)
    }
    let physical: [UInt64]
    do throws(VirtioError) {
      try lock(pointer, total)
      physical = try Self.physicalAddresses(pointer, pages: pages.count, pagemap: pagemap)
    } catch {
      munmap(pointer, total)
      throw fail(error)
    }
    let runs = Pagemap.contiguousRuns(physical, pageSize: Self.pageSize).map {
      (offset: $0.first * Self.pageSize, length: $0.count * Self.pageSize, physical: physical[$0.first])
    }
    logger.info(
      "no-IOMMU DMA chunk",
      metadata: [
        "bytes": "\(total)", "pages": "\(pages.count)", "batches": "\(fds.count)", "runs": "\(runs.count)",
        "physical": "\(runs.map { "0x\(String($0.physical, radix: 16))+\($0.length >> 20)MiB" }.joined(separator: ","))",
      ])
    return Chunk(pointer: pointer, size: total, runs: runs)
  }

  /// mlock: the pages must stay where pagemap saw them.
  private func lock(_ p: UnsafeMutableRawPointer, _ size: Int) throws(VirtioError) {
    guard mlock(p, size) == 0 else {
      let e = Glibc.errno
      let limit = Sys.memlockLimit().map { "\($0 / 1024) KiB" } ?? "unlimited"
      throw VirtioError(
        .memlockLimit,
        "cannot lock \(size >> 20) MiB of DMA memory (mlock: \(Sys.errnoText(e))); the locked-memory limit is \(limit): raise it (`ulimit -l unlimited`)",
        errno: e)
    }
  }

  /// Each 2 MiB page's physical address, checked: present, non-zero, and
  /// its last 4 KiB page where the first one says (a hugepage is contiguous).
  static func physicalAddresses(_ base: UnsafeMutableRawPointer, pages: Int, pagemap: Int32) throws(VirtioError) -> [UInt64] {
    var out: [UInt64] = []
    for i in 0..<pages {
      let va = UInt64(UInt(bitPattern: base)) + UInt64(i * pageSize)
      let start = try Pagemap.physicalAddress(of: try entry(pagemap, va), virtualAddress: va)
      let lastVA = va + UInt64(pageSize - Pagemap.basePageSize)
      let last = try Pagemap.physicalAddress(of: try entry(pagemap, lastVA), virtualAddress: lastVA)
      guard start % UInt64(pageSize) == 0, last == start + UInt64(pageSize - Pagemap.basePageSize) else {
        throw VirtioError(
          .dmaAllocation,
          "the hugepage at 0x\(String(va, radix: 16)) is not one physically contiguous 2 MiB page (pagemap: 0x\(String(start, radix: 16)) … 0x\(String(last, radix: 16))); is the hugetlb page size 2 MiB?")
      }
      out.append(start)
    }
    return out
  }

  static func entry(_ pagemap: Int32, _ va: UInt64) throws(VirtioError) -> PagemapEntry {
    var raw: UInt64 = 0
    do {
      try Sys.pread(pagemap, &raw, 8, Pagemap.entryOffset(virtualAddress: va), Pagemap.path)
    } catch {
      throw VirtioError(.permissionDenied, "cannot read \(Pagemap.path) (\(error.reason)); run as root (CAP_SYS_ADMIN)", errno: error.errno)
    }
    return PagemapEntry(raw: raw)
  }

  /// One mapping of `pages` (memfd, page index) in that order.
  static func remap(_ pages: [(fd: Int32, index: Int)], size: Int) throws(VirtioError) -> UnsafeMutableRawPointer {
    // SAFETY: an address range reserved (PROT_NONE) with a page of slack, so a
    // 2 MiB aligned window of `size` fits; the slack is given back at once.
    guard let raw = mmap(nil, size + pageSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), raw != MAP_FAILED else {
      let e = Glibc.errno
      throw VirtioError(.dmaAllocation, "cannot reserve \(size >> 20) MiB of address space: \(Sys.errnoText(e))", errno: e)
    }
    let r = UInt(bitPattern: raw)
    let aligned = (r + UInt(pageSize) - 1) & ~(UInt(pageSize) - 1)
    if aligned > r { munmap(raw, Int(aligned - r)) }
    let tail = Int(r + UInt(size + pageSize) - (aligned + UInt(size)))
    if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(size)), tail) }
    let base = UnsafeMutableRawPointer(bitPattern: aligned)!
    for (slot, page) in pages.enumerated() {
      // SAFETY: MAP_FIXED over our own reservation only (slot < pages.count).
      let p = mmap(
        base + slot * pageSize, pageSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE, page.fd, off_t(page.index * pageSize))
      guard p != MAP_FAILED else {
        let e = Glibc.errno
        munmap(base, size)
        throw VirtioError(.dmaAllocation, "cannot map a hugepage in physical order: \(Sys.errnoText(e))", errno: e)
      }
    }
    return base
  }

  static func hugePageShortage(_ size: Int, _ reason: String) -> String {
    let dir = "/sys/kernel/mm/hugepages/hugepages-2048kB"
    return Pagemap.noHugePagesMessage(
      bytes: size, free: Sys.readLine(dir + "/free_hugepages").flatMap { Int($0) }, total: Sys.readLine(dir + "/nr_hugepages").flatMap { Int($0) },
      reason: reason)
  }

  private func fail(_ e: VirtioError) -> VirtioError {
    logger.error("no-IOMMU DMA allocation failed", metadata: ["step": "dma-physical", "reason": "\(e.message)"])
    return e
  }

  deinit {
    // SAFETY: the owner reset the device first, so nothing reaches these pages any more.
    for c in chunks { munmap(c.pointer, c.size) }
  }
}
