import VirtioCore

/// One 64-bit entry of `/proc/self/pagemap` — what the kernel says about one
/// virtual page of this process (Linux: Documentation/admin-guide/mm/pagemap.rst):
/// bit 63 present, bit 62 swapped, bits 0–54 the page frame number. Without
/// CAP_SYS_ADMIN the kernel reports every frame number as 0.
public struct PagemapEntry: Sendable, Equatable {
  public let raw: UInt64

  public init(raw: UInt64) { self.raw = raw }

  public var present: Bool { raw >> 63 & 1 == 1 }
  public var swapped: Bool { raw >> 62 & 1 == 1 }
  /// Bits 0–54 when present.
  public var frameNumber: UInt64 { raw & ((1 << 55) - 1) }
}

/// Physical addresses for the no-IOMMU path: reading pagemap entries and
/// checking them, and finding physically contiguous runs of pages.
public enum Pagemap {
  /// The page size pagemap is indexed by (one entry per 4 KiB page on x86-64).
  public static let basePageSize = 4096
  public static let path = "/proc/self/pagemap"

  /// The byte offset of the entry for `virtualAddress` in the pagemap file.
  public static func entryOffset(virtualAddress: UInt64) -> UInt64 {
    virtualAddress / UInt64(basePageSize) * 8
  }

  /// The physical address of `virtualAddress`, from its pagemap entry —
  /// or why there is none: not present (the page was never touched or locked),
  /// swapped out, or a frame number of 0 (this process lacks CAP_SYS_ADMIN,
  /// so the kernel hides physical addresses).
  public static func physicalAddress(of entry: PagemapEntry, virtualAddress: UInt64) throws(VirtioError) -> UInt64 {
    let va = "0x\(String(virtualAddress, radix: 16))"
    guard entry.present else {
      throw VirtioError(
        .dmaAllocation,
        "\(path) says the DMA page at \(va) is \(entry.swapped ? "swapped out" : "not present") (entry 0x\(String(entry.raw, radix: 16))); its physical address is unknown, so it cannot be given to the device")
    }
    guard entry.frameNumber != 0 else {
      throw VirtioError(
        .permissionDenied,
        "\(path) shows no physical addresses to this process (page frame numbers read as 0): it lacks CAP_SYS_ADMIN; the no-IOMMU path hands physical addresses to the device, so run it as root")
    }
    return entry.frameNumber * UInt64(basePageSize) + virtualAddress % UInt64(basePageSize)
  }

  /// Runs of physically contiguous pages, given each page's physical address
  /// in virtual order: (first page index, page count) for each run.
  public static func contiguousRuns(_ physical: [UInt64], pageSize: Int) -> [(first: Int, count: Int)] {
    var runs: [(first: Int, count: Int)] = []
    for (i, p) in physical.enumerated() {
      if let last = runs.last, last.first + last.count == i, physical[i - 1] &+ UInt64(pageSize) == p {
        runs[runs.count - 1].count += 1
      } else {
        runs.append((i, 1))
      }
    }
    return runs
  }

  /// The refusal when the kernel had too few free hugepages.
  public static func noHugePagesMessage(bytes: Int, free: Int?, total: Int?, reason: String) -> String {
    let pages = (bytes + (2 << 20) - 1) >> 21
    let have = free.map { f in "\(f) free\(total.map { " of \($0) reserved" } ?? "")" } ?? "an unknown number free"
    return
      "the no-IOMMU path needs \(pages) free 2 MiB hugepages for \(bytes >> 20) MiB of DMA memory (physical addresses stay fixed only for locked hugepages), and the kernel has \(have) (\(reason)); reserve more: echo 64 > /proc/sys/vm/nr_hugepages, or hugepages=64 on the kernel command line"
  }
}
