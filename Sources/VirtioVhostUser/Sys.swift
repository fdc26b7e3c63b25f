import Glibc

// The few plain system calls the vhost-user transport makes itself (the rest
// go through CVhostSys): errno as a typed value, owned descriptors, time.
// Mirrors VirtioVFIO's Sys layer.

/// A failed system call: which one, and errno.
struct SysError: Error, CustomStringConvertible {
  var call: String
  var errno: Int32

  init(_ call: String, errno: Int32 = Glibc.errno) {
    self.call = call
    self.errno = errno
  }

  var reason: String { String(cString: strerror(errno)) }
  var description: String { "\(call): \(reason) (errno \(errno))" }
}

/// An open file descriptor this value owns: closed exactly once.
struct OwnedFD: ~Copyable {
  let raw: Int32

  init(adopting raw: Int32) {
    precondition(raw >= 0, "OwnedFD needs a valid descriptor")
    self.raw = raw
  }

  deinit { Glibc.close(raw) }
}

enum Sys {
  static func close(_ fd: Int32) {
    // close(2) is not retried on EINTR on Linux: the descriptor is gone either way.
    if fd >= 0 { _ = Glibc.close(fd) }
  }

  static func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }

  static func monotonicMilliseconds() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
  }

  /// Waits `milliseconds` between two attempts of a retry loop that has a
  /// deadline (connecting to a backend that is still starting).
  static func pause(milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && Glibc.errno == EINTR { request = remaining }
  }

  static func unlink(_ path: String) { _ = Glibc.unlink(path) }
}
