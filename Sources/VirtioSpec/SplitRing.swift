// Split virtqueue layout — virtio 1.2 §2.7; Linux: include/uapi/linux/virtio_ring.h.
// All multi-byte fields are little-endian in memory (§2.7: "le16/le32/le64");
// the ring core converts with `littleEndian` at each access.
//
// These structs are the source of truth for ring memory: the ring core and the
// simulated device address every field through them (`MemoryLayout<T>.stride`
// and `MemoryLayout<T>.offset(of: \.field)`, folded to constants at compile
// time), and VirtioSpecTests pin each size and offset to Linux's uapi headers.

/// virtq_desc — §2.7.5; Linux: struct vring_desc. 16 bytes, 16-byte aligned table.
@frozen public struct VirtqDesc: BitwiseCopyable, Equatable, Sendable {
  /// Guest-physical (or IOVA, with ACCESS_PLATFORM) address of the buffer.
  public var addr: UInt64
  public var len: UInt32
  /// `VirtqDescFlags` bits.
  public var flags: UInt16
  /// Next descriptor in the chain when `flags` has NEXT.
  public var next: UInt16

  @inlinable public init(addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
    self.addr = addr
    self.len = len
    self.flags = flags
    self.next = next
  }
}

/// Descriptor flags shared by split and packed rings — §2.7.5 / §2.8.13; Linux: VRING_DESC_F_*.
public enum VirtqDescFlags {
  /// VRING_DESC_F_NEXT: the chain continues (split: via `next`; packed: the next slot).
  public static let next: UInt16 = 1
  /// VRING_DESC_F_WRITE: the buffer is device-writable.
  public static let write: UInt16 = 2
  /// VRING_DESC_F_INDIRECT: the buffer holds a table of descriptors.
  public static let indirect: UInt16 = 4
  /// VRING_PACKED_DESC_F_AVAIL (bit 7) — packed ring only.
  public static let avail: UInt16 = 1 << 7
  /// VRING_PACKED_DESC_F_USED (bit 15) — packed ring only.
  public static let used: UInt16 = 1 << 15
}

/// virtq_used_elem — §2.7.8; Linux: struct vring_used_elem. 8 bytes.
@frozen public struct VirtqUsedElem: BitwiseCopyable, Equatable, Sendable {
  /// Index of the head of the used descriptor chain (le32, but always < queue size).
  public var id: UInt32
  /// Bytes written into the device-writable part of the chain.
  public var len: UInt32
  @inlinable public init(id: UInt32, len: UInt32) {
    self.id = id
    self.len = len
  }
}

/// The fixed head of virtq_avail (§2.7.6) and of virtq_used (§2.7.8), which
/// have the same two fields; Linux: struct vring_avail / vring_used without
/// their `ring[]`.
@frozen public struct VirtqRingHead: BitwiseCopyable, Equatable, Sendable {
  /// `VirtqAvailFlags` or `VirtqUsedFlags` bits.
  public var flags: UInt16
  /// Where the writer puts its next ring entry (free-running, modulo 2^16).
  public var idx: UInt16
  @inlinable public init(flags: UInt16, idx: UInt16) {
    self.flags = flags
    self.idx = idx
  }
}

/// virtq_avail's head (§2.7.6): written by the driver, read by the device;
/// `ring[]` follows at `SplitRingLayout.availRingOffset`, then `used_event`.
public typealias VirtqAvail = VirtqRingHead

/// virtq_used's head (§2.7.8): written by the device; `ring[]` of
/// `VirtqUsedElem` follows at `SplitRingLayout.usedRingOffset`, then `avail_event`.
public typealias VirtqUsed = VirtqRingHead

/// Avail ring flags — §2.7.6; Linux: VRING_AVAIL_F_NO_INTERRUPT.
public enum VirtqAvailFlags {
  public static let noInterrupt: UInt16 = 1
}

/// Used ring flags — §2.7.8; Linux: VRING_USED_F_NO_NOTIFY.
public enum VirtqUsedFlags {
  public static let noNotify: UInt16 = 1
}

/// Byte layout of one split virtqueue's three areas for a queue of `size` entries.
/// virtq_avail: `flags, idx, ring[size], used_event` (§2.7.6);
/// virtq_used: `flags, idx, ring[size] of virtq_used_elem, avail_event` (§2.7.8).
public struct SplitRingLayout: Sendable, Equatable {
  public let size: Int

  /// §2.7: queue size is a power of 2 no larger than 32768 (split ring).
  public static let maxSize = 32768

  @inlinable public init?(size: Int) {
    guard size > 0, size <= Self.maxSize, size & (size - 1) == 0 else { return nil }
    self.size = size
  }

  /// §2.7 table "Virtqueue Part Alignment": descriptor table 16, available ring 2, used ring 4.
  public static let descAlignment = 16
  public static let availAlignment = 2
  public static let usedAlignment = 4

  /// One avail ring entry: le16, the head of a chain (§2.7.6).
  public typealias AvailEntry = UInt16

  /// 16 * size (§2.7 table "Virtqueue Part Sizes").
  @inlinable public var descTableBytes: Int { MemoryLayout<VirtqDesc>.stride &* size }
  /// 6 + 2 * size (includes used_event).
  @inlinable public var availRingBytes: Int { usedEventOffset + MemoryLayout<UInt16>.size }
  /// 6 + 8 * size (includes avail_event).
  @inlinable public var usedRingBytes: Int { availEventOffset + MemoryLayout<UInt16>.size }

  // Offsets inside virtq_avail (§2.7.6), from `VirtqAvail`.
  @inlinable public static var availFlagsOffset: Int { MemoryLayout<VirtqAvail>.offset(of: \.flags)! }
  @inlinable public static var availIdxOffset: Int { MemoryLayout<VirtqAvail>.offset(of: \.idx)! }
  @inlinable public static var availRingOffset: Int { MemoryLayout<VirtqAvail>.size }
  /// used_event: the le16 after `ring[size]` (Linux: vring_used_event()).
  @inlinable public var usedEventOffset: Int {
    Self.availRingOffset &+ MemoryLayout<AvailEntry>.stride &* size
  }

  // Offsets inside virtq_used (§2.7.8), from `VirtqUsed` and `VirtqUsedElem`.
  @inlinable public static var usedFlagsOffset: Int { MemoryLayout<VirtqUsed>.offset(of: \.flags)! }
  @inlinable public static var usedIdxOffset: Int { MemoryLayout<VirtqUsed>.offset(of: \.idx)! }
  /// `ring[]` starts after the head, aligned for its elements (4 either way).
  @inlinable public static var usedRingOffset: Int {
    let align = MemoryLayout<VirtqUsedElem>.alignment
    return (MemoryLayout<VirtqUsed>.size &+ align &- 1) & ~(align &- 1)
  }
  /// avail_event: the le16 after `ring[size]` (Linux: vring_avail_event()).
  @inlinable public var availEventOffset: Int {
    Self.usedRingOffset &+ MemoryLayout<VirtqUsedElem>.stride &* size
  }

  /// One contiguous area holding all three parts: desc | avail | pad | used.
  /// The used ring starts on its own 128-byte block (more than the spec's 4):
  /// the device writes it while the driver writes the avail ring, and sharing a
  /// cache line (or an adjacent-line prefetch pair) between them costs both sides.
  public var descOffset: Int { 0 }
  public var availOffset: Int { descTableBytes }
  public var usedOffset: Int { (availOffset + availRingBytes + 127) & ~127 }
  public var totalBytes: Int { usedOffset + usedRingBytes }
}

/// §2.7.10 / Linux vring_need_event(): with EVENT_IDX, the other side asked to be
/// notified when the index passes `eventIdx`; return whether moving from `old` to
/// `new` crossed it. All arithmetic is modulo 2^16.
@inlinable public func virtqNeedEvent(eventIdx: UInt16, new: UInt16, old: UInt16) -> Bool {
  (new &- eventIdx &- 1) < (new &- old)
}
