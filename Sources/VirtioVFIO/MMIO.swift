import CVirtioAtomics
import Glibc
import VirtioOS

// BAR mapping: the device's register windows mmap'ed from the VFIO device fd,
// and the only code that loads or stores them. Every access is one volatile
// load or store of the register's width through the CVirtioAtomics shim, so
// the compiler neither splits, merges nor drops it.

/// A window of device registers (a virtio structure inside a mapped BAR).
/// A plain view; the `BARMappings` that mapped it keeps it valid.
@usableFromInline
struct MMIORegion: BitwiseCopyable {
  @usableFromInline let base: UnsafeMutableRawPointer
  @usableFromInline let length: Int

  init(base: UnsafeMutableRawPointer, length: Int) {
    self.base = base
    self.length = length
  }

  // SAFETY (all accessors): `base` points into a live MAP_SHARED mapping of a
  // BAR at least `length` bytes long (checked when the region was carved out),
  // and callers pass register offsets from the spec's layout; the precondition
  // keeps a bad offset from touching memory outside the structure.

  @inlinable func read8(_ offset: Int) -> UInt8 {
    precondition(offset >= 0 && offset + 1 <= length, "MMIO read outside the structure")
    return vio_mmio_read8(base + offset)
  }
  @inlinable func read16(_ offset: Int) -> UInt16 {
    precondition(offset >= 0 && offset + 2 <= length, "MMIO read outside the structure")
    return UInt16(littleEndian: vio_mmio_read16(base + offset))
  }
  @inlinable func read32(_ offset: Int) -> UInt32 {
    precondition(offset >= 0 && offset + 4 <= length, "MMIO read outside the structure")
    return UInt32(littleEndian: vio_mmio_read32(base + offset))
  }
  @inlinable func write8(_ offset: Int, _ v: UInt8) {
    precondition(offset >= 0 && offset + 1 <= length, "MMIO write outside the structure")
    vio_mmio_write8(base + offset, v)
  }
  @inlinable func write16(_ offset: Int, _ v: UInt16) {
    precondition(offset >= 0 && offset + 2 <= length, "MMIO write outside the structure")
    vio_mmio_write16(base + offset, v.littleEndian)
  }
  @inlinable func write32(_ offset: Int, _ v: UInt32) {
    precondition(offset >= 0 && offset + 4 <= length, "MMIO write outside the structure")
    vio_mmio_write32(base + offset, v.littleEndian)
  }
  /// §4.1.3.1: a 64-bit register is written as two 32-bit halves, low first.
  func write64(_ offset: Int, _ v: UInt64) {
    write32(offset, UInt32(truncatingIfNeeded: v))
    write32(offset + 4, UInt32(truncatingIfNeeded: v >> 32))
  }
  func read64(_ offset: Int) -> UInt64 {
    UInt64(read32(offset)) | UInt64(read32(offset + 4)) << 32
  }
}

/// The BARs mmap'ed from a VFIO device fd or sysfs `resourceN`; unmapped exactly once.
struct BARMappings: ~Copyable {
  private var bases: [UnsafeMutableRawPointer?] = Array(repeating: nil, count: 6)
  private var sizes: [Int] = Array(repeating: 0, count: 6)

  init() {}

  /// Maps BAR `bar` (its whole region) unless it is mapped already.
  mutating func map(bar: Int, region: VFIORegion, deviceFD: Int32) throws(SysError) {
    precondition(bar >= 0 && bar < 6)
    if bases[bar] != nil { return }
    guard region.size > 0, region.size <= UInt64(Int.max) else { throw SysError("mmap BAR\(bar) (empty region)", errno: ENODEV) }
    guard region.mappable else { throw SysError("mmap BAR\(bar) (VFIO says the region cannot be mmap'ed)", errno: ENOTSUP) }
    let size = Int(region.size)
    // SAFETY: a fresh shared mapping of the device fd at the offset VFIO gave
    // for this BAR; it stays mapped until deinit and is never handed out as
    // anything but an MMIORegion bounded by the BAR size.
    guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, deviceFD, off_t(Int64(bitPattern: region.offset))),
      p != MAP_FAILED
    else { throw SysError("mmap BAR\(bar) (\(size) bytes)") }
    bases[bar] = p
    sizes[bar] = size
  }

  /// Maps BAR `bar` through its sysfs file (`/sys/bus/pci/devices/<BDF>/resourceN`,
  /// for a function on uio_pci_generic, which has no VFIO device fd).
  mutating func map(bar: Int, resourcePath path: String) throws(SysError) {
    precondition(bar >= 0 && bar < 6)
    if bases[bar] != nil { return }
    let fd = try Sys.open(path, O_RDWR)
    defer { Sys.close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw SysError("fstat \(path)") }
    guard st.st_size > 0 else { throw SysError("mmap BAR\(bar) (\(path) is empty: not a memory BAR)", errno: ENODEV) }
    let size = Int(st.st_size)
    // SAFETY: a fresh shared mapping of the whole BAR through sysfs; it stays
    // mapped until deinit and is only handed out as MMIORegions bounded by its size.
    guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
      throw SysError("mmap \(path) (\(size) bytes)")
    }
    bases[bar] = p
    sizes[bar] = size
  }

  /// The window `[offset, offset + length)` of a mapped BAR, or nil when it does not fit.
  func region(bar: Int, offset: UInt32, length: UInt32) -> MMIORegion? {
    guard bar >= 0, bar < 6, let base = bases[bar], length > 0, UInt64(offset) + UInt64(length) <= UInt64(sizes[bar]) else {
      return nil
    }
    return MMIORegion(base: base + Int(offset), length: Int(length))
  }

  func size(bar: Int) -> Int { sizes[bar] }

  /// After a surprise removal: every BAR mapping is replaced in place by
  /// private memory that reads all-ones, as a removed PCI device reads. Views
  /// handed out (the registers, other threads' doorbells) stay valid and
  /// harmless, and the device file loses the references its mappings held.
  func replaceWithInertMemory() {
    for i in 0..<6 {
      guard let p = bases[i] else { continue }
      // SAFETY: MAP_FIXED over exactly the range this value mapped (and still
      // owns, unmapped in deinit); the kernel swaps the pages in one step, so a
      // concurrent access lands in either mapping, never in a hole.
      let q = mmap(p, sizes[i], PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
      if q == p { memset(p, 0xFF, sizes[i]) }
    }
  }

  deinit {
    for i in 0..<6 {
      if let p = bases[i] { munmap(p, sizes[i]) }
    }
  }
}
