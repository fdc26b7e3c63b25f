import Glibc

internal import CVirtioSys

// The one layer of raw system calls the VFIO transport makes (besides mmap in
// the BAR and DMA files): each retries EINTR and turns -1 into a typed error
// carrying errno and the call's name, so callers can say what to do about it.

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

enum Sys {
  /// Runs `body` until it does not fail with EINTR; -1 becomes a `SysError`.
  @inline(__always)
  static func retrying(_ call: @autoclosure () -> String, _ body: () -> Int32) throws(SysError) -> Int32 {
    while true {
      let rc = body()
      if rc >= 0 { return rc }
      let e = Glibc.errno
      if e == EINTR { continue }
      throw SysError(call(), errno: e)
    }
  }

  static func open(_ path: String, _ flags: Int32) throws(SysError) -> Int32 {
    try retrying("open \(path)") { Glibc.open(path, flags | O_CLOEXEC) }
  }

  static func close(_ fd: Int32) {
    // close(2) must not be retried on EINTR on Linux: the fd is gone either way.
    _ = Glibc.close(fd)
  }

  static func ioctl(_ fd: Int32, _ request: UInt, _ arg: UnsafeMutableRawPointer, _ name: String) throws(SysError) -> Int32 {
    try retrying(name) { vio_ioctl_ptr(fd, request, arg) }
  }

  static func ioctl(_ fd: Int32, _ request: UInt, value: UInt, _ name: String) throws(SysError) -> Int32 {
    try retrying(name) { vio_ioctl_ulong(fd, request, value) }
  }

  /// ioctl with a C struct in place: `value` is filled in by the kernel.
  static func ioctl<T>(_ fd: Int32, _ request: UInt, _ value: inout T, _ name: String) throws(SysError) -> Int32 {
    try withUnsafeMutableBytes(of: &value) { (raw) throws(SysError) -> Int32 in
      // SAFETY: `raw` covers exactly one T for the duration of the call; the
      // request numbers come from the uapi header with a matching struct.
      try ioctl(fd, request, raw.baseAddress!, name)
    }
  }

  /// pread(2) of exactly `count` bytes (short reads are an error for config space).
  static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ offset: UInt64, _ what: String) throws(SysError) {
    var done = 0
    while done < count {
      let n = Glibc.pread(fd, buffer + done, count - done, off_t(Int64(bitPattern: offset + UInt64(done))))
      if n < 0 {
        if Glibc.errno == EINTR { continue }
        throw SysError("pread \(what)")
      }
      if n == 0 { throw SysError("pread \(what) (short read)", errno: EIO) }
      done += n
    }
  }

  static func pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, _ offset: UInt64, _ what: String) throws(SysError) {
    var done = 0
    while done < count {
      let n = Glibc.pwrite(fd, buffer + done, count - done, off_t(Int64(bitPattern: offset + UInt64(done))))
      if n < 0 {
        if Glibc.errno == EINTR { continue }
        throw SysError("pwrite \(what)")
      }
      if n == 0 { throw SysError("pwrite \(what) (short write)", errno: EIO) }
      done += n
    }
  }

  // MARK: files in sysfs / procfs

  /// The whole (small) file as text, or nil when it cannot be read.
  static func readText(_ path: String) -> String? {
    let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { Glibc.close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if n < 0 {
        if Glibc.errno == EINTR { continue }
        return nil
      }
      if n == 0 { break }
      bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Up to `count` bytes from the start of a file (PCI config space in sysfs), or nil.
  static func readBytes(_ path: String, count: Int) -> [UInt8]? {
    let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { Glibc.close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = bytes.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, 0) }
    guard n >= 0 else { return nil }
    return Array(bytes[0..<n])
  }

  /// The first line of a file, trimmed.
  static func readLine(_ path: String) -> String? {
    guard let text = readText(path) else { return nil }
    return String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
      .trimmingWhitespace()
  }

  /// Writes `text` to a sysfs attribute in one write(2), as the kernel expects.
  static func writeText(_ path: String, _ text: String) throws(SysError) {
    let fd = try open(path, O_WRONLY)
    defer { Glibc.close(fd) }
    var bytes = Array(text.utf8)
    let count = bytes.count
    let n = try retrying("write \(path)") {
      Int32(truncatingIfNeeded: bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, count) })
    }
    if Int(n) != count { throw SysError("write \(path) (short write)", errno: EIO) }
  }

  /// readlink(2): the link's target, or nil.
  static func readLink(_ path: String) -> String? {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = buf.withUnsafeMutableBufferPointer { Glibc.readlink(path, $0.baseAddress!, $0.count - 1) }
    guard n >= 0 else { return nil }
    return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// Entry names of a directory (without . and ..), sorted; nil when it cannot be opened.
  static func listDirectory(_ path: String) -> [String]? {
    guard let dir = opendir(path) else { return nil }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
  }

  static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  // MARK: time

  static func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
  }

  static func sleep(milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && Glibc.errno == EINTR { request = remaining }
  }

  /// RLIMIT_MEMLOCK soft limit in bytes (nil = unlimited).
  static func memlockLimit() -> UInt64? {
    var lim = rlimit()
    guard getrlimit(__rlimit_resource_t(VIO_RLIMIT_MEMLOCK), &lim) == 0 else { return nil }
    return lim.rlim_cur == rlim_t.max ? nil : UInt64(lim.rlim_cur)
  }
}

extension StringProtocol {
  func trimmingWhitespace() -> String {
    var s = Substring(self)
    while let c = s.first, c == " " || c == "\n" || c == "\t" || c == "\r" { s = s.dropFirst() }
    while let c = s.last, c == " " || c == "\n" || c == "\t" || c == "\r" { s = s.dropLast() }
    return String(s)
  }
}
