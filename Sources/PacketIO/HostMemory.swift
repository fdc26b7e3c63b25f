import Glibc
import VirtioCore

/// Plain process memory for buffer pools of groups without a VFIO port (the
/// kernel path copies into its socket rings, so no device needs an IOVA):
/// anonymous mappings, "IOVA" = the address. Owns its mappings; unmapped once.
struct HostMemory: ~Copyable, DMAAllocator {
  private var regions: [(UnsafeMutableRawPointer, Int)] = []

  init() {}

  mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
    guard byteCount > 0, alignment > 0, alignment <= 4096, alignment & (alignment - 1) == 0 else {
      throw VirtioError(.invalidArgument, "host memory: \(byteCount) bytes aligned to \(alignment) is not a valid request")
    }
    let size = (byteCount + 4095) & ~4095
    // SAFETY: a fresh private anonymous mapping (zero-filled, page-aligned), owned here until deinit.
    guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0), p != MAP_FAILED
    else {
      let e = errno
      throw VirtioError(.dmaAllocation, "cannot allocate \(size >> 10) KiB for packet buffers: \(Sys.errnoText(e)); use fewer or smaller buffers", errno: e)
    }
    regions.append((p, size))
    return DMARegion(pointer: p, iova: UInt64(UInt(bitPattern: p)), byteCount: byteCount)
  }

  deinit {
    for (p, n) in regions { munmap(p, n) }
  }
}
