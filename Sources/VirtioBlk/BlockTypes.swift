import VirtioCore
import VirtioSpec

/// A block operation — §5.2.6 request types.
@frozen public enum BlockOp: UInt8, Sendable, BitwiseCopyable, CustomStringConvertible {
  case read, write, flush, discard, writeZeroes, getID

  /// VIRTIO_BLK_T_* for this operation (§5.2.6).
  @inlinable public var virtioType: UInt32 {
    switch self {
    case .read: BlockRequestType.read
    case .write: BlockRequestType.write
    case .flush: BlockRequestType.flush
    case .discard: BlockRequestType.discard
    case .writeZeroes: BlockRequestType.writeZeroes
    case .getID: BlockRequestType.getID
    }
  }

  /// The device writes into the data segments (IN requests).
  @inlinable public var deviceWritesData: Bool { self == .read || self == .getID }

  public var description: String {
    switch self {
    case .read: "read"
    case .write: "write"
    case .flush: "flush"
    case .discard: "discard"
    case .writeZeroes: "write-zeroes"
    case .getID: "get-id"
    }
  }
}

/// Outcome of one request, from the status byte the device wrote last (§5.2.6).
@frozen public enum BlockStatus: Equatable, Sendable, BitwiseCopyable, CustomStringConvertible {
  case ok
  /// VIRTIO_BLK_S_IOERR: the device failed the request.
  case ioError
  /// VIRTIO_BLK_S_UNSUPP: the device does not support the request.
  case unsupported
  /// A status byte the spec does not define (the device misbehaved), or none written.
  case invalid(UInt8)
  /// Not from the device: the device went away (reset, or a vhost-user backend
  /// that hung up) while the request was in flight; it may or may not have been
  /// carried out. Never silent: every such request completes with this.
  case deviceLost

  @inlinable public init(byte: UInt8) {
    switch byte {
    case VirtioSpec.BlockStatus.ok: self = .ok
    case VirtioSpec.BlockStatus.ioErr: self = .ioError
    case VirtioSpec.BlockStatus.unsupp: self = .unsupported
    default: self = .invalid(byte)
    }
  }

  /// How bad it is, to keep the worst status of a split request.
  @inlinable var severity: Int {
    switch self {
    case .ok: 0
    case .unsupported: 1
    case .ioError: 2
    case .invalid: 3
    case .deviceLost: 4
    }
  }

  public var description: String {
    switch self {
    case .ok: "ok"
    case .ioError: "I/O error reported by the device (VIRTIO_BLK_S_IOERR)"
    case .unsupported: "request not supported by the device (VIRTIO_BLK_S_UNSUPP)"
    case .invalid(0xFF): "the device returned the request without writing a status byte"
    case .invalid(let b): "the device wrote an undefined status byte 0x\(String(b, radix: 16))"
    case .deviceLost: "the device went away with the request in flight (it may or may not have been carried out)"
    }
  }
}

/// A finished request as the submitter sees it: a request that was split into
/// several virtio requests completes once, when its last part is back.
@frozen public struct BlockCompletion: Equatable, Sendable, BitwiseCopyable {
  public var tag: UInt64
  public var op: BlockOp
  /// The worst status of the request's parts.
  public var status: BlockStatus
  /// Data bytes the request moved (0 unless `status == .ok`; 0 for flush, discard, write-zeroes).
  public var bytes: UInt32

  @inlinable public init(tag: UInt64, op: BlockOp, status: BlockStatus, bytes: UInt32) {
    self.tag = tag
    self.op = op
    self.status = status
    self.bytes = bytes
  }
}

/// Why a request was refused before anything reached the device.
@frozen public enum BlockSubmitResult: Equatable, Sendable, BitwiseCopyable, CustomStringConvertible {
  case queued
  /// Every request slot or descriptor is in use: poll completions first.
  case queueFull
  /// §5.2.6.2: no writes (or write-zeroes, discard) to a device that offers RO.
  case readOnlyDevice
  /// The device did not offer the feature the operation needs (FLUSH, DISCARD, WRITE_ZEROES).
  case unsupportedOperation
  /// The sector range lies outside the device.
  case outOfRange
  /// A length of 0, not a multiple of the logical block size, or a sector not on a block boundary.
  case unaligned
  /// More segments than SEG_MAX (or the ring) allows for one request.
  case tooManySegments
  /// A segment longer than SIZE_MAX.
  case segmentTooLarge
  case queueBroken

  public var description: String {
    switch self {
    case .queued: "queued"
    case .queueFull: "the queue is full; poll completions, then submit again"
    case .readOnlyDevice: "the device is read-only (VIRTIO_BLK_F_RO); writes are refused"
    case .unsupportedOperation: "the device does not offer this operation"
    case .outOfRange: "the range lies beyond the end of the device"
    case .unaligned: "the offset or length is not a multiple of the device's logical block size"
    case .tooManySegments: "the request has more segments than the device accepts (SEG_MAX)"
    case .segmentTooLarge: "a segment is longer than the device accepts (SIZE_MAX)"
    case .queueBroken: "the queue stopped trusting its device; reset the device"
    }
  }
}

/// Per-queue counters of the virtio layer (read them from the owning thread).
public struct BlockQueueStats: Sendable, Equatable {
  /// virtio requests made available (a split request counts each part).
  public var requests: UInt64 = 0
  /// Data bytes completed with status OK.
  public var bytes: UInt64 = 0
  /// Requests that completed with a status other than OK.
  public var errors: UInt64 = 0
  /// Doorbell writes (§4.1.5.2).
  public var notifications: UInt64 = 0
  /// Submissions refused because the queue was full.
  public var queueFull: UInt64 = 0
  /// Submitted requests that had to be split to fit SEG_MAX / SIZE_MAX / the transfer limit.
  public var splits: UInt64 = 0
  public init() {}
}
