// Packed virtqueue layout — virtio 1.2 §2.8; Linux: include/uapi/linux/virtio_ring.h.
// As for the split ring (SplitRing.swift), these structs are the source of
// truth: ring memory is addressed through their strides and field offsets,
// which VirtioSpecTests pin to Linux's uapi headers.

/// pvirtq_desc — §2.8.13; Linux: struct vring_packed_desc. 16 bytes.
@frozen public struct PackedDesc: BitwiseCopyable, Equatable, Sendable {
  public var addr: UInt64
  public var len: UInt32
  /// Buffer ID: the driver's name for the buffer, echoed by the device in the used descriptor.
  public var id: UInt16
  /// `VirtqDescFlags` incl. AVAIL (bit 7) and USED (bit 15).
  public var flags: UInt16
  @inlinable public init(addr: UInt64, len: UInt32, id: UInt16, flags: UInt16) {
    self.addr = addr
    self.len = len
    self.id = id
    self.flags = flags
  }
}

/// pvirtq_event_suppress — §2.8.14; Linux: struct vring_packed_desc_event. 4 bytes.
@frozen public struct PackedDescEvent: BitwiseCopyable, Equatable, Sendable {
  /// Bits 0–14: descriptor ring offset; bit 15: wrap counter.
  public var offWrap: UInt16
  /// `PackedEventFlags`.
  public var flags: UInt16
  /// Bits 0–14 of `offWrap`: desc_event_off, the descriptor ring offset.
  public static let offsetMask: UInt16 = 0x7FFF
  @inlinable public init(offWrap: UInt16, flags: UInt16) {
    self.offWrap = offWrap
    self.flags = flags
  }
}

extension PackedDescEvent {
  /// The EVENT_IDX test of a packed ring — §2.8.10 with §2.7.10's arithmetic.
  /// The other side's `offWrap` (flags DESC) names a descriptor slot and the
  /// wrap counter of the lap it is in; one side just made `count` slots
  /// available (driver) or used (device), `new` being the slot after them and
  /// `wrap` its wrap counter there. Returns whether the named slot is among
  /// them. A slot named in the other lap is taken as one ring earlier, so the
  /// modulo-2^16 comparison of `virtqNeedEvent` applies unchanged.
  @inlinable public static func needEvent(offWrap: UInt16, wrap: Bool, ringSize: Int, new: UInt16, count: Int) -> Bool {
    var event = offWrap & offsetMask
    if (offWrap >> PackedEventFlags.wrapCounterShift != 0) != wrap {
      event &-= UInt16(truncatingIfNeeded: ringSize)
    }
    return virtqNeedEvent(eventIdx: event, new: new, old: new &- UInt16(truncatingIfNeeded: count))
  }
}

/// Event suppression flags — §2.8.10; Linux: VRING_PACKED_EVENT_FLAG_*.
public enum PackedEventFlags {
  /// RING_EVENT_FLAGS_ENABLE: notify on every buffer.
  public static let enable: UInt16 = 0
  /// RING_EVENT_FLAGS_DISABLE: do not notify.
  public static let disable: UInt16 = 1
  /// RING_EVENT_FLAGS_DESC: notify when the descriptor at `offWrap` is reached (needs EVENT_IDX).
  public static let desc: UInt16 = 2
  /// Shift of the wrap counter inside `offWrap` (VRING_PACKED_EVENT_F_WRAP_CTR).
  public static let wrapCounterShift: UInt16 = 15
}

/// Byte layout of one packed virtqueue: descriptor ring (16-byte aligned) and two
/// 4-byte event suppression areas (driver area, device area) — §2.8.
public struct PackedRingLayout: Sendable, Equatable {
  public let size: Int
  /// §2.8: any size up to 32768; need not be a power of 2.
  public static let maxSize = 32768

  @inlinable public init?(size: Int) {
    guard size > 0, size <= Self.maxSize else { return nil }
    self.size = size
  }

  public static let descAlignment = 16
  public static let eventAlignment = 4
  @inlinable public var descRingBytes: Int { MemoryLayout<PackedDesc>.stride &* size }
  /// Driver event suppression area (written by the driver, read by the device).
  @inlinable public var driverEventOffset: Int { descRingBytes }
  /// Device event suppression area (written by the device, read by the driver).
  @inlinable public var deviceEventOffset: Int { descRingBytes &+ MemoryLayout<PackedDescEvent>.stride }
  @inlinable public var totalBytes: Int { descRingBytes &+ 2 &* MemoryLayout<PackedDescEvent>.stride }
}
