import CVirtioAtomics

// The device side's one door into ring memory shared with the driver. Each
// access is a single aligned little-endian load or store through the atomics
// shim, so the compiler neither tears nor reorders it past the named barrier.
//
// SAFETY (all helpers): `base` was produced by `SimIOMMU.translate` for the
// whole ring area (or indirect table) the ring type reads, and every caller
// passes an offset computed from the queue size and an index checked against
// it, so each access is in bounds and naturally aligned (ring areas are
// checked for the spec's alignment when the device ring is created).

struct DeviceRingMemory: BitwiseCopyable {
  let base: UnsafeMutableRawPointer

  init(_ base: UnsafeMutableRawPointer) { self.base = base }

  /// Load that later loads may not move above (avail idx / packed flags before the entries they publish).
  func loadAcquire16(_ offset: Int) -> UInt16 {
    UInt16(littleEndian: vio_load_acquire_u16(base + offset))
  }
  func load16(_ offset: Int) -> UInt16 {
    UInt16(littleEndian: vio_load_relaxed_u16(base + offset))
  }
  func load32(_ offset: Int) -> UInt32 {
    UInt32(littleEndian: vio_load_relaxed_u32(base + offset))
  }
  func load64(_ offset: Int) -> UInt64 {
    UInt64(littleEndian: vio_load_relaxed_u64(base + offset))
  }
  /// Store that earlier stores may not move below (used entries before used idx / packed flags).
  func storeRelease16(_ offset: Int, _ v: UInt16) {
    vio_store_release_u16(base + offset, v.littleEndian)
  }
  func store16(_ offset: Int, _ v: UInt16) {
    vio_store_relaxed_u16(base + offset, v.littleEndian)
  }
  func store32(_ offset: Int, _ v: UInt32) {
    vio_store_relaxed_u32(base + offset, v.littleEndian)
  }
}

/// Full barrier: a store before it (used idx, event index) is visible before a
/// load after it (the driver's suppression state, the avail idx re-check).
func deviceFenceFull() { vio_fence_full() }
