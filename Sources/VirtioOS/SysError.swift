import Glibc
import SystemPackage

/// A failed system call: which call (with what it was for), errno, and — where
/// the caller knows it — what the user can do about it. The one error type of
/// the OS layer; the transports turn it into `VirtioError` with their own advice.
public struct SysError: Error, CustomStringConvertible, Sendable {
  /// The call and its object, e.g. `open /dev/vfio/vfio`.
  public var call: String
  public var errno: Int32
  /// What to do next, when known ("use fewer queues").
  public var advice: String?

  public init(_ call: String, errno: Int32 = Glibc.errno, advice: String? = nil) {
    self.call = call
    self.errno = errno
    self.advice = advice
  }

  /// errno as swift-system's typed value (`.noSuchFileOrDirectory`, …).
  public var code: Errno { Errno(rawValue: errno) }
  /// strerror(3) of `errno`.
  public var reason: String { Sys.errnoText(errno) }
  public var description: String {
    "\(call): \(reason) (errno \(errno))" + (advice.map { "; \($0)" } ?? "")
  }
}
