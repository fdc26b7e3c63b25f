import VirtioBlk

/// read, write, flush, discard, writeZeroes (and getID on virtio).
public typealias BlockOperation = VirtioBlk.BlockOp
/// Why a submission was refused before anything reached the device (or `.queued`).
public typealias BlockSubmitResult = VirtioBlk.BlockSubmitResult

/// How a request ended, the same on both paths.
@frozen public enum BlockIOStatus: Equatable, Sendable, BitwiseCopyable, CustomStringConvertible {
  case ok
  /// The device (VIRTIO_BLK_S_IOERR) or the kernel (EIO) failed the request.
  case ioError
  /// The device (VIRTIO_BLK_S_UNSUPP) or the kernel (EOPNOTSUPP) does not do this request.
  case unsupported
  /// The virtio device answered with an undefined status byte, or none.
  case invalidResponse(UInt8)
  /// The kernel failed the request with this errno.
  case system(errno: Int32)
  /// The device went away (reset after DEVICE_NEEDS_RESET, or a vhost-user
  /// backend that hung up) with the request in flight: it may or may not have
  /// been carried out. `BlockOpenOptions.inFlightAfterRecovery = .resubmit`
  /// posts such requests again once the device is back instead.
  case deviceLost

  /// `self == .ok` without the synthesized `==`, which is a call across modules
  /// (the enum has payloads); for completion loops.
  @inlinable public var isOK: Bool {
    if case .ok = self { return true }
    return false
  }

  @inlinable init(_ s: VirtioBlk.BlockStatus) {
    switch s {
    case .ok: self = .ok
    case .ioError: self = .ioError
    case .unsupported: self = .unsupported
    case .invalid(let b): self = .invalidResponse(b)
    case .deviceLost: self = .deviceLost
    }
  }

  public var description: String {
    switch self {
    case .ok: "ok"
    case .ioError: "I/O error"
    case .unsupported: "not supported by the device"
    case .invalidResponse(0xFF): "the device returned the request without a status"
    case .invalidResponse(let b): "the device answered with undefined status 0x\(String(b, radix: 16))"
    case .system(let e): "the kernel failed the request (errno \(e))"
    case .deviceLost: "the device went away with the request in flight (it may or may not have been carried out)"
    }
  }
}

/// A finished request.
@frozen public struct BlockIOCompletion: Equatable, Sendable, BitwiseCopyable {
  public var tag: UInt64
  public var op: BlockOperation
  public var status: BlockIOStatus
  /// Data bytes moved (0 unless ok; 0 for flush, discard, write-zeroes).
  public var bytes: Int

  @inlinable public init(tag: UInt64, op: BlockOperation, status: BlockIOStatus, bytes: Int) {
    self.tag = tag
    self.op = op
    self.status = status
    self.bytes = bytes
  }
}

/// How a queue waits for completions.
public enum BlockWaitMode: Sendable, Equatable {
  /// Never sleep: `wait` returns at once and the caller polls again (lowest latency, one core busy).
  case polling
  /// Sleep on the queue's interrupt (MSI-X eventfd on VFIO; io_uring_enter on the kernel path).
  case interrupts
  /// Poll for `spinMicroseconds`, then sleep on the interrupt.
  case hybrid(spinMicroseconds: Int)
}

/// What `BlockQueue.wait` came to.
public enum BlockWaitResult: Equatable, Sendable {
  /// Completions may be ready: poll.
  case ready
  case timedOut
  /// The queue stopped trusting its device (virtio), or the wait failed (errno).
  case broken
  case failed(errno: Int32)
}

/// Per-queue counters, kept by the queue's own thread (no atomics): read them there.
public struct BlockQueueStats: Sendable, Equatable, BitwiseCopyable {
  /// Requests accepted (a request BlockIO split counts once).
  public var requests: UInt64 = 0
  public var reads: UInt64 = 0
  public var writes: UInt64 = 0
  public var flushes: UInt64 = 0
  public var discards: UInt64 = 0
  public var writeZeroes: UInt64 = 0
  public var bytesRead: UInt64 = 0
  public var bytesWritten: UInt64 = 0
  /// Requests that completed with a status other than ok.
  public var errors: UInt64 = 0
  /// Device notifications: doorbell writes (virtio) or io_uring_enter calls that submitted.
  public var notifications: UInt64 = 0
  /// Interrupts taken: MSI-X eventfd wakeups (virtio) or waits in io_uring_enter.
  public var interrupts: UInt64 = 0
  /// Submissions refused with `.queueFull`, and the time from the first such
  /// refusal until the queue took a request again.
  public var queueFullEvents: UInt64 = 0
  public var queueFullNanoseconds: UInt64 = 0
  /// Requests split into several device requests (SEG_MAX / SIZE_MAX / transfer limit).
  public var splits: UInt64 = 0
  /// Requests the device saw: virtio requests made available, each part of a
  /// split request counted (the kernel path: as `requests`).
  public var deviceRequests: UInt64 = 0
  /// Times the device went away and came back (a vhost-user backend restart) while this queue lived.
  public var deviceRestarts: UInt64 = 0
  /// Requests in flight when the device went away: posted again after it came
  /// back (`InFlightPolicy.resubmit`), or completed as `.deviceLost`.
  public var requestsResubmitted: UInt64 = 0
  public var requestsLost: UInt64 = 0

  public init() {}
}
