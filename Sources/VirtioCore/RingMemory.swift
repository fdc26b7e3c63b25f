import CVirtioAtomics

// The one place the ring core touches shared ring memory. Every access is a
// single aligned load or store of a little-endian field, through the atomics
// shim so the compiler neither tears nor reorders it past the named barrier.
//
// SAFETY (all helpers): `base` points into a ring area the queue allocated
// with its layout's size, and every caller passes an offset computed from that
// layout and an index masked or checked against the queue size, so the access
// is in bounds and naturally aligned.

@usableFromInline struct RingMemory: BitwiseCopyable {
  @usableFromInline let base: UnsafeMutableRawPointer

  @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

  /// Load that later loads may not move above (index before the entries it covers).
  @inlinable func loadAcquire16(_ offset: Int) -> UInt16 {
    UInt16(littleEndian: vio_load_acquire_u16(base + offset))
  }
  @inlinable func load16(_ offset: Int) -> UInt16 {
    UInt16(littleEndian: vio_load_relaxed_u16(base + offset))
  }
  @inlinable func load32(_ offset: Int) -> UInt32 {
    UInt32(littleEndian: vio_load_relaxed_u32(base + offset))
  }
  @inlinable func load64(_ offset: Int) -> UInt64 {
    UInt64(littleEndian: vio_load_relaxed_u64(base + offset))
  }
  /// Store that earlier stores may not move below (entries before the index/flags that publish them).
  @inlinable func storeRelease16(_ offset: Int, _ v: UInt16) {
    vio_store_release_u16(base + offset, v.littleEndian)
  }
  @inlinable func store16(_ offset: Int, _ v: UInt16) {
    vio_store_relaxed_u16(base + offset, v.littleEndian)
  }
  @inlinable func store32(_ offset: Int, _ v: UInt32) {
    vio_store_relaxed_u32(base + offset, v.littleEndian)
  }
  @inlinable func store64(_ offset: Int, _ v: UInt64) {
    vio_store_relaxed_u64(base + offset, v.littleEndian)
  }
  /// One 16-byte descriptor (split or packed share the first 12 bytes: addr, len).
  @inlinable func storeDescriptor(_ offset: Int, addr: UInt64, len: UInt32, word3: UInt16, word4: UInt16) {
    store64(offset, addr)
    store32(offset + 8, len)
    store16(offset + 12, word3)
    store16(offset + 14, word4)
  }
}

/// Full barrier (Linux virtio_mb): a store before it is visible before a load after it.
@inlinable func ringFenceFull() { vio_fence_full() }

/// Driver-private memory (never visible to the device), owned by a queue:
/// allocated once at setup, freed in the queue's deinit.
@usableFromInline struct PrivateArray<Element: BitwiseCopyable>: BitwiseCopyable {
  @usableFromInline let base: UnsafeMutablePointer<Element>

  init(count: Int, repeating value: Element) {
    // SAFETY: a fresh allocation of `count` elements, initialised here and
    // released exactly once by the owning queue's deinit (`free()`).
    base = UnsafeMutablePointer<Element>.allocate(capacity: max(count, 1))
    base.initialize(repeating: value, count: max(count, 1))
  }

  @inlinable subscript(i: Int) -> Element {
    // SAFETY: callers index with a value checked against, or masked to, the queue size.
    get { base[i] }
    nonmutating set { base[i] = newValue }
  }

  func free() { base.deallocate() }
}

/// The DMA memory both ring layouts need: the ring area (zeroed, page-aligned)
/// and, with INDIRECT_DESC and `maxIndirect` > 1, one zeroed table of
/// `min(maxIndirect, size)` descriptors per head / buffer ID.
enum RingAllocation {
  static func allocate<A: DMAAllocator & ~Copyable>(
    ringBytes: Int, size: Int, features: RingFeatures, maxIndirect: Int, memory: inout A
  ) throws(VirtioError) -> (area: DMARegion, tables: DMARegion?, perTable: Int) {
    let area = try memory.allocate(byteCount: ringBytes, alignment: 4096)
    area.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: ringBytes)
    let perTable = min(maxIndirect, size)
    guard features.indirect && perTable > 1 else { return (area, nil, 0) }
    let bytes = size * perTable * 16
    let tables = try memory.allocate(byteCount: bytes, alignment: 16)
    tables.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    return (area, tables, perTable)
  }
}
