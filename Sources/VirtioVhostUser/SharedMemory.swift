import Glibc
import Logging
import VirtioCore
import VirtioOS

internal import CVhostSys

/// Which pages back the shared memory.
public enum SharedMemoryPages: Sendable, CustomStringConvertible {
  /// A 2 MiB hugetlb memfd when the kernel has free hugepages, else 4 KiB pages.
  case hugePreferred
  /// 2 MiB hugepages or fail (reserve them: /proc/sys/vm/nr_hugepages).
  case hugeRequired
  /// 4 KiB pages only.
  case small

  public var description: String {
    switch self {
    case .hugePreferred: "huge-preferred"
    case .hugeRequired: "huge-required"
    case .small: "small"
    }
  }
}

/// The memory the backend sees: one memfd, mapped MAP_SHARED here and sent to
/// the backend with SET_MEM_TABLE, which maps it too. Rings and buffers come
/// from a bump allocator over it (VirtioCore's `DMAAllocator`), so everything
/// the driver posts lies inside the region the backend can translate.
///
/// Addresses: vhost-user without IOMMU_PLATFORM translates descriptor
/// addresses through the region's guest address and ring addresses through
/// its user address (vhost-user.rst "Memory access"). Both are this process's
/// virtual address of the mapping, so a region's IOVA *is* its pointer — the
/// convention of DPDK's virtio-user.
///
/// The mapping and the descriptor are released exactly once, when the value
/// goes away (after the transport stopped the backend's rings).
public struct SharedMemoryArena: ~Copyable, DMAAllocator {
  let fd: OwnedFD
  /// Start of the mapping in this process (and the address the backend is told).
  public let base: UnsafeMutableRawPointer
  public let byteCount: Int
  /// Backed by 2 MiB hugetlb pages.
  public let usesHugePages: Bool
  /// Bytes handed out so far.
  public private(set) var usedBytes: Int = 0

  static let hugePageSize = 2 << 20

  /// Creates and maps `byteCount` bytes (rounded up to 2 MiB).
  public init(byteCount requested: Int, pages: SharedMemoryPages, logger: Logger) throws(VirtioError) {
    let size = max(Self.hugePageSize, (requested + Self.hugePageSize - 1) & ~(Self.hugePageSize - 1))
    var raw: Int32 = -1
    var huge = false
    if pages != .small {
      raw = Sys.memfd("vio-vhost-user", size: size, hugetlb: true)
      huge = raw >= 0
      if raw < 0 && pages == .hugeRequired {
        let e = errno
        throw VirtioError(
          .dmaAllocation,
          "no 2 MiB hugepages for \(size >> 20) MiB of vhost-user shared memory (\(Sys.errnoText(e))); reserve some: echo \(size / Self.hugePageSize + 64) > /proc/sys/vm/nr_hugepages",
          errno: e)
      }
    }
    if raw < 0 {
      raw = Sys.memfd("vio-vhost-user", size: size, hugetlb: false)
      guard raw >= 0 else {
        let e = errno
        throw VirtioError(.dmaAllocation, "cannot create \(size >> 20) MiB of shared memory (memfd_create: \(Sys.errnoText(e)))", errno: e)
      }
    }
    var owned = OwnedFD(adopting: raw)
    // SAFETY: maps the whole memfd we just sized; owned by this value until deinit.
    // MAP_POPULATE on hugetlb pages reserves them now, so a later fault cannot fail.
    var mapped = vio_vhost_map_shared(owned.raw, UInt64(size), huge ? 1 : 0)
    if mapped == nil && huge && pages == .hugePreferred {
      // A hugetlb memfd is created even when too few pages are free; only the
      // populating map fails. Preferred, not required: fall back to 4 KiB pages.
      logger.notice("too few free 2 MiB pages for the shared memory; using 4 KiB pages", metadata: ["bytes": "\(size)"])
      let small = Sys.memfd("vio-vhost-user", size: size, hugetlb: false)
      if small >= 0 {
        owned = OwnedFD(adopting: small)
        huge = false
        mapped = vio_vhost_map_shared(owned.raw, UInt64(size), 0)
      }
    }
    guard let p = mapped else {
      let e = errno
      throw VirtioError(
        .dmaAllocation,
        "cannot map \(size >> 20) MiB of shared memory: \(Sys.errnoText(e))\(huge ? "; too few free hugepages — reserve more in /proc/sys/vm/nr_hugepages" : "")",
        errno: e)
    }
    self.fd = owned
    self.base = p
    self.byteCount = size
    self.usesHugePages = huge
    logger.info("shared memory", metadata: ["bytes": "\(size)", "pages": "\(huge ? "2MiB" : "4KiB")", "address": "0x\(String(UInt(bitPattern: p), radix: 16))"])
  }

  deinit {
    // SAFETY: the transport stopped the backend's rings first; our mapping goes
    // now, the backend's own mapping of the memfd is its business.
    munmap(base, byteCount)
  }

  /// The address the backend is told for the start of the region.
  public var address: UInt64 { UInt64(UInt(bitPattern: base)) }

  /// The one region of SET_MEM_TABLE: guest and user address = our address.
  public var region: VhostUserMemoryRegion {
    VhostUserMemoryRegion(guest_phys_addr: address, memory_size: UInt64(byteCount), userspace_addr: address, mmap_offset: 0)
  }

  /// True when `[address, address + length)` lies inside the region.
  public func contains(address a: UInt64, length: Int) -> Bool {
    a >= address && length >= 0 && a - address <= UInt64(byteCount) && UInt64(length) <= UInt64(byteCount) - (a - address)
  }

  /// Zeroed memory (fresh memfd pages; the bump allocator never hands out a byte twice).
  public mutating func allocate(byteCount n: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    guard n > 0, alignment > 0, alignment & (alignment - 1) == 0, alignment <= Self.hugePageSize else {
      throw VirtioError(.invalidArgument, "shared memory allocation of \(n) bytes aligned to \(alignment): size must be > 0 and alignment a power of two ≤ 2 MiB")
    }
    let start = (usedBytes + alignment - 1) & ~(alignment - 1)
    guard start <= byteCount, n <= byteCount - start else {
      throw VirtioError(
        .dmaAllocation,
        "the vhost-user shared memory (\(byteCount >> 20) MiB) has \(byteCount - min(start, byteCount)) bytes left, \(n) asked; open with a larger VhostUserOptions.memoryBytes")
    }
    usedBytes = start + n
    let p = base + start
    return DMARegion(pointer: p, iova: UInt64(UInt(bitPattern: p)), byteCount: n)
  }
}

/// Shared memory several transports hand to their backends: every backend
/// maps the same memfd, so a buffer received from one can be transmitted to
/// another as is (PacketIO forwarding between two vhost-user ports). Open the
/// first transport normally, then pass `transport.memorySpace` to
/// `VhostUserTransport.open(_:deviceType:options:logger:sharing:)`. Lives as
/// long as any transport in it. The vhost-user twin of VirtioVFIO's
/// `VFIODMASpace`; a class because it has several owners, reached on the
/// control path only.
public final class SharedMemorySpace {
  var arena: SharedMemoryArena
  /// Endpoints opened over this memory (for messages).
  public internal(set) var members: [VhostUserEndpoint] = []

  public init(arena: consuming SharedMemoryArena) { self.arena = arena }

  public var byteCount: Int { arena.byteCount }
  public var usedBytes: Int { arena.usedBytes }
}
