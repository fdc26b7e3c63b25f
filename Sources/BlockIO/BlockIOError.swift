import VirtioCore

/// The one error type of BlockIO's control path (open, queues, pools): a code
/// to switch on, the errno when a system call failed, and a sentence that says
/// what happened and what to do. The data path never throws: submissions
/// return a `BlockSubmitResult`, completions carry a `BlockIOStatus`.
public struct BlockIOError: Error, Sendable, Equatable, CustomStringConvertible {
  public enum Code: String, Sendable {
    /// The target string is neither `pci:DDDD:BB:DD.F` nor a path.
    case invalidTarget
    /// No such file, device or PCI function.
    case notFound
    case permissionDenied
    /// The device is in use (EBUSY), or the queue was already handed out.
    case busy
    /// The device or kernel lacks something required (a feature, O_DIRECT, io_uring).
    case unsupported
    /// An argument is out of range (queue index, pool shape).
    case invalidArgument
    /// Out of DMA or pinned memory.
    case noMemory
    /// The virtio device failed during setup (negotiation, queues, reset).
    case device
    /// A system call failed in a way none of the above covers.
    case system
    /// A request completed with an error status (async layer).
    case ioFailed
    /// A request was refused before submission (unaligned, out of range, read-only ...; async layer).
    case refused
  }

  public var code: Code
  public var errno: Int32?
  public var message: String

  public init(_ code: Code, _ message: String, errno: Int32? = nil) {
    self.code = code
    self.message = message
    self.errno = errno
  }

  /// A driver-stack error, with its code mapped.
  public init(_ e: VirtioError) {
    let code: Code
    switch e.code {
    case .invalidArgument: code = .invalidArgument
    case .dmaAllocation, .memlockLimit: code = .noMemory
    case .permissionDenied: code = .permissionDenied
    case .deviceBusy, .groupNotViable: code = .busy
    case .noIOMMU, .vfioUnavailable, .missingFeatures: code = .unsupported
    case .transport: code = .system
    default: code = .device
    }
    self.init(code, e.message, errno: e.errno)
  }

  public var description: String { message }
}
