import CVirtioAtomics
import VirtioSpec

// The one place ring code touches shared ring memory: the driver's queues here,
// and the simulated device in VirtioSim (hence `package`). Every access is a
// single aligned load or store of one little-endian field, through the atomics
// shim so the compiler neither tears nor reorders it past the named barrier.
//
// Fields are named through the spec layer's structs — VirtqDesc (§2.7.5),
// VirtqAvail (§2.7.6), VirtqUsed / VirtqUsedElem (§2.7.8), PackedDesc (§2.8.13),
// PackedDescEvent (§2.8.14): `at` is the byte offset where one such struct
// starts in the area (an entry start is `index * MemoryLayout<T>.stride`), and
// the field's place inside it is `MemoryLayout<T>.offset(of:)` of the key path,
// which the optimiser folds to a constant, so `load(\VirtqUsedElem.len, at: e)`
// is the same one `mov 4(base,e)` a literal `e + 4` was. Only the bare le16
// slots with no struct of their own (avail ring entries, used_event,
// avail_event) are reached by offset, which SplitRingLayout computes from the
// same structs.
//
// SAFETY (all helpers): `base` points at a ring area (or indirect table) of the
// layout's size — allocated by the queue, or translated whole by the simulated
// device's IOMMU — and every caller passes an offset computed from that layout
// and an index masked or checked against the queue size, so the access is in
// bounds and naturally aligned.

@usableFromInline package struct RingMemory: BitwiseCopyable {
  @usableFromInline package let base: UnsafeMutableRawPointer

  @inlinable package init(_ base: UnsafeMutableRawPointer) { self.base = base }

  /// Address of `field` of the `T` that starts `start` bytes into the area.
  @inlinable @inline(__always) func address<T, F>(_ field: KeyPath<T, F>, _ start: Int) -> UnsafeMutableRawPointer {
    base + (start &+ MemoryLayout<T>.offset(of: field)!)
  }

  // MARK: fields of spec structs

  /// Load that later loads may not move above (an index or packed flags before the entries they cover).
  @inlinable @inline(__always) package func loadAcquire<T>(_ field: KeyPath<T, UInt16>, at start: Int) -> UInt16 {
    UInt16(littleEndian: vio_load_acquire_u16(address(field, start)))
  }
  @inlinable @inline(__always) package func load<T>(_ field: KeyPath<T, UInt16>, at start: Int) -> UInt16 {
    UInt16(littleEndian: vio_load_relaxed_u16(address(field, start)))
  }
  @inlinable @inline(__always) package func load<T>(_ field: KeyPath<T, UInt32>, at start: Int) -> UInt32 {
    UInt32(littleEndian: vio_load_relaxed_u32(address(field, start)))
  }
  @inlinable @inline(__always) package func load<T>(_ field: KeyPath<T, UInt64>, at start: Int) -> UInt64 {
    UInt64(littleEndian: vio_load_relaxed_u64(address(field, start)))
  }
  /// Store that earlier stores may not move below (entries before the index or flags that publish them).
  @inlinable @inline(__always) package func storeRelease<T>(_ field: KeyPath<T, UInt16>, at start: Int, _ v: UInt16) {
    vio_store_release_u16(address(field, start), v.littleEndian)
  }
  @inlinable @inline(__always) package func store<T>(_ field: KeyPath<T, UInt16>, at start: Int, _ v: UInt16) {
    vio_store_relaxed_u16(address(field, start), v.littleEndian)
  }
  @inlinable @inline(__always) package func store<T>(_ field: KeyPath<T, UInt32>, at start: Int, _ v: UInt32) {
    vio_store_relaxed_u32(address(field, start), v.littleEndian)
  }
  @inlinable @inline(__always) package func store<T>(_ field: KeyPath<T, UInt64>, at start: Int, _ v: UInt64) {
    vio_store_relaxed_u64(address(field, start), v.littleEndian)
  }

  // MARK: whole spec structs, field by field in memory order

  /// A split descriptor (§2.7.5), every field relaxed: the avail idx store that
  /// follows (release) publishes it.
  @inlinable @inline(__always) package func store(_ d: VirtqDesc, at start: Int) {
    store(\VirtqDesc.addr, at: start, d.addr)
    store(\VirtqDesc.len, at: start, d.len)
    store(\VirtqDesc.flags, at: start, d.flags)
    store(\VirtqDesc.next, at: start, d.next)
  }
  /// A split descriptor (§2.7.5) stored only where it differs from what the
  /// table holds, as two words: addr, and len, flags and next, which fill
  /// the descriptor's second 8 bytes in that order (both little-endian, so
  /// the word's bytes are the fields' bytes). A receive ring refilled with
  /// the buffers it just returned, slot for slot, then rewrites nothing,
  /// and the table's lines stay shared with the device instead of moving to
  /// the driver and back. Relaxed, as `store(_:at:)`: the avail idx store
  /// (release) publishes it. Only the driver writes the table, so what the
  /// loads see is the driver's last store (or, from a device that wrote
  /// there anyway, something that differs and is overwritten).
  @inlinable @inline(__always) package func storeIfChanged(_ d: VirtqDesc, at start: Int) {
    let tail = UInt64(d.len) | UInt64(d.flags) << 32 | UInt64(d.next) << 48
    let addr = address(\VirtqDesc.addr, start)
    let rest = address(\VirtqDesc.len, start)
    if UInt64(littleEndian: vio_load_relaxed_u64(addr)) != d.addr || UInt64(littleEndian: vio_load_relaxed_u64(rest)) != tail {
      vio_store_relaxed_u64(addr, d.addr.littleEndian)
      vio_store_relaxed_u64(rest, tail.littleEndian)
    }
  }
  /// A packed descriptor (§2.8.13), every field relaxed: one in an indirect
  /// table, or behind a chain's head, which publishes it later.
  @inlinable @inline(__always) package func store(_ d: PackedDesc, at start: Int) {
    storeAllButFlags(d, at: start)
    store(\PackedDesc.flags, at: start, d.flags)
  }
  /// A packed descriptor handed over by its flags (§2.8.21.1): addr, len and
  /// id first, flags last with release, so the device never sees the new
  /// flags on a half-written descriptor.
  @inlinable @inline(__always) package func storeReleasingFlags(_ d: PackedDesc, at start: Int) {
    storeAllButFlags(d, at: start)
    storeRelease(\PackedDesc.flags, at: start, d.flags)
  }
  @inlinable @inline(__always) func storeAllButFlags(_ d: PackedDesc, at start: Int) {
    store(\PackedDesc.addr, at: start, d.addr)
    store(\PackedDesc.len, at: start, d.len)
    store(\PackedDesc.id, at: start, d.id)
  }
  /// A used element (§2.7.8), both fields relaxed: the used idx store (release) publishes it.
  @inlinable @inline(__always) package func store(_ e: VirtqUsedElem, at start: Int) {
    store(\VirtqUsedElem.id, at: start, e.id)
    store(\VirtqUsedElem.len, at: start, e.len)
  }

  // MARK: bare le16 slots (avail ring entries, used_event, avail_event)

  @inlinable @inline(__always) package func loadAcquire16(_ offset: Int) -> UInt16 {
    UInt16(littleEndian: vio_load_acquire_u16(base + offset))
  }
  @inlinable @inline(__always) package func load16(_ offset: Int) -> UInt16 {
    UInt16(littleEndian: vio_load_relaxed_u16(base + offset))
  }
  @inlinable @inline(__always) package func store16(_ offset: Int, _ v: UInt16) {
    vio_store_relaxed_u16(base + offset, v.littleEndian)
  }
}

/// Full barrier (Linux virtio_mb): a store before it is visible before a load after it.
@inlinable package func ringFenceFull() { vio_fence_full() }

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

/// The indirect descriptor tables of one ring (§2.7.5.3 split, §2.8.19 packed):
/// one table of `perChain` descriptors per head / buffer ID, absent
/// (`memory == nil`) without INDIRECT_DESC. Both descriptor formats are 16 bytes.
@frozen @usableFromInline struct IndirectTables {
  @usableFromInline let memory: RingMemory?
  @usableFromInline let iova: UInt64
  /// Descriptors per table: the longest chain one indirect descriptor can carry.
  @usableFromInline let perChain: Int

  @usableFromInline init(memory: RingMemory?, iova: UInt64, perChain: Int) {
    self.memory = memory
    self.iova = iova
    self.perChain = perChain
  }

  /// Where the table of head / buffer ID `id` starts: its byte offset in `memory` and its IOVA.
  @inlinable func table(for id: UInt16) -> (offset: Int, iova: UInt64) {
    let offset = Int(id) &* perChain &* MemoryLayout<VirtqDesc>.stride
    return (offset, iova &+ UInt64(offset))
  }
}

/// The DMA memory both ring layouts need: the ring area (zeroed, page-aligned)
/// and, with INDIRECT_DESC and `maxIndirect` > 1, one zeroed table of
/// `min(maxIndirect, size)` descriptors per head / buffer ID.
enum RingAllocation {
  static func allocate<A: DMAAllocator & ~Copyable>(
    ringBytes: Int, size: Int, features: RingFeatures, maxIndirect: Int, memory: inout A
  ) throws(VirtioError) -> (area: DMARegion, indirect: IndirectTables) {
    let area = try memory.allocate(byteCount: ringBytes, alignment: 4096)
    area.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: ringBytes)
    let perTable = min(maxIndirect, size)
    guard features.indirect && perTable > 1 else { return (area, IndirectTables(memory: nil, iova: 0, perChain: 0)) }
    let bytes = size * perTable * MemoryLayout<VirtqDesc>.stride  // = PackedDesc stride
    // §2.7.5.3 / §2.8.19: a table of descriptors, aligned as the descriptor table is.
    let tables = try memory.allocate(byteCount: bytes, alignment: SplitRingLayout.descAlignment)
    tables.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    return (area, IndirectTables(memory: RingMemory(tables.pointer), iova: tables.iova, perChain: perTable))
  }
}
