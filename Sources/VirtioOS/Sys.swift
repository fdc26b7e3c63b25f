import Glibc
import SystemPackage

internal import CVirtioOS

// The one layer of plain system calls the transports and tools make (besides
// mmap in the BAR, DMA and shared-memory files): each retries EINTR and turns
// -1 into a `SysError` carrying errno and the call's name, so callers can say
// what to do about it. Files go through swift-system's `FileDescriptor`.

package enum Sys {
  /// Runs `body` until it does not fail with EINTR; -1 becomes a `SysError`.
  @inline(__always)
  package static func retrying(_ call: @autoclosure () -> String, _ body: () -> Int32) throws(SysError) -> Int32 {
    while true {
      let rc = body()
      if rc >= 0 { return rc }
      let e = Glibc.errno
      if e == EINTR { continue }
      throw SysError(call(), errno: e)
    }
  }

  /// Runs a swift-system call; its `Errno` becomes a `SysError` named `call`.
  @inline(__always)
  static func system<T>(_ call: @autoclosure () -> String, _ body: () throws -> T) throws(SysError) -> T {
    do {
      return try body()
    } catch {
      throw SysError(call(), errno: (error as? Errno)?.rawValue ?? EIO)
    }
  }

  package static func open(_ path: String, _ flags: Int32) throws(SysError) -> Int32 {
    try retrying("open \(path)") { Glibc.open(path, flags | O_CLOEXEC) }
  }

  package static func close(_ fd: Int32) {
    // close(2) must not be retried on EINTR on Linux: the fd is gone either way.
    if fd >= 0 { _ = Glibc.close(fd) }
  }

  package static func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }

  package static func unlink(_ path: String) { _ = Glibc.unlink(path) }

  /// Makes descriptor `fd` refer to /dev/null (dup2: the old file is closed in
  /// the same step, so no other thread can take the number in between). The
  /// number stays its owner's, closed once as before; what it referred to
  /// loses this reference. False when /dev/null could not be opened or dup2 failed.
  package static func redirectToDevNull(_ fd: Int32) -> Bool {
    let null = Glibc.open("/dev/null", O_RDWR | O_CLOEXEC)
    guard null >= 0 else { return false }
    defer { Glibc.close(null) }
    guard dup2(null, fd) == fd else { return false }
    _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    return true
  }

  package static func ioctl(_ fd: Int32, _ request: UInt, _ arg: UnsafeMutableRawPointer, _ name: String) throws(SysError) -> Int32 {
    try retrying(name) { vio_os_ioctl_ptr(fd, request, arg) }
  }

  package static func ioctl(_ fd: Int32, _ request: UInt, value: UInt, _ name: String) throws(SysError) -> Int32 {
    try retrying(name) { vio_os_ioctl_ulong(fd, request, value) }
  }

  /// ioctl with a C struct in place: `value` is filled in by the kernel.
  package static func ioctl<T>(_ fd: Int32, _ request: UInt, _ value: inout T, _ name: String) throws(SysError) -> Int32 {
    try withUnsafeMutableBytes(of: &value) { (raw) throws(SysError) -> Int32 in
      // SAFETY: `raw` covers exactly one T for the duration of the call; the
      // request numbers come from the uapi header with a matching struct.
      try ioctl(fd, request, raw.baseAddress!, name)
    }
  }

  /// pread(2) of exactly `count` bytes (short reads are an error for config space).
  package static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ offset: UInt64, _ what: String) throws(SysError) {
    let file = FileDescriptor(rawValue: fd)
    try whole(count, "pread \(what)") { done in
      try file.read(
        fromAbsoluteOffset: Int64(bitPattern: offset + UInt64(done)),
        into: UnsafeMutableRawBufferPointer(start: buffer + done, count: count - done))
    }
  }

  /// pwrite(2) of exactly `count` bytes.
  package static func pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, _ offset: UInt64, _ what: String) throws(SysError) {
    let file = FileDescriptor(rawValue: fd)
    try whole(count, "pwrite \(what)") { done in
      try file.write(
        toAbsoluteOffset: Int64(bitPattern: offset + UInt64(done)),
        UnsafeRawBufferPointer(start: buffer + done, count: count - done))
    }
  }

  /// Repeats `step` (given the bytes moved so far, returns how many more it
  /// moved) until `count` bytes moved; a step that moves none is a short transfer.
  private static func whole(_ count: Int, _ call: String, _ step: (Int) throws -> Int) throws(SysError) {
    var done = 0
    while done < count {
      let n = try system(call) { try step(done) }
      if n == 0 { throw SysError("\(call) (short transfer)", errno: EIO) }
      done += n
    }
  }

  // MARK: files in sysfs / procfs

  /// The whole (small) file as text, or nil when it cannot be read.
  package static func readText(_ path: String) -> String? {
    guard let file = try? FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) else { return nil }
    return try? file.closeAfter {
      var bytes: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 4096)
      while true {
        let n = try chunk.withUnsafeMutableBytes { try file.read(into: $0) }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
      }
      return String(decoding: bytes, as: UTF8.self)
    }
  }

  /// Up to `count` bytes from the start of a file (PCI config space in sysfs), or nil.
  package static func readBytes(_ path: String, count: Int) -> [UInt8]? {
    guard let file = try? FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) else { return nil }
    return try? file.closeAfter {
      var bytes = [UInt8](repeating: 0, count: count)
      let n = try bytes.withUnsafeMutableBytes { try file.read(fromAbsoluteOffset: 0, into: $0) }
      return Array(bytes[0..<n])
    }
  }

  /// The first line of a file, trimmed.
  package static func readLine(_ path: String) -> String? {
    guard let text = readText(path) else { return nil }
    return String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
      .trimmingWhitespace()
  }

  /// Writes `text` to a sysfs attribute in one write(2), as the kernel expects.
  package static func writeText(_ path: String, _ text: String) throws(SysError) {
    let file = FileDescriptor(rawValue: try open(path, O_WRONLY))
    defer { close(file.rawValue) }
    let bytes = Array(text.utf8)
    let n = try system("write \(path)") { try bytes.withUnsafeBytes { try file.write($0) } }
    if n != bytes.count { throw SysError("write \(path) (short write)", errno: EIO) }
  }

  /// readlink(2): the link's target, or nil.
  package static func readLink(_ path: String) -> String? {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = buf.withUnsafeMutableBufferPointer { Glibc.readlink(path, $0.baseAddress!, $0.count - 1) }
    guard n >= 0 else { return nil }
    return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// Entry names of a directory (without . and ..), sorted; nil when it cannot be opened.
  package static func listDirectory(_ path: String) -> [String]? {
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

  package static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  /// memfd_create(2) (close-on-exec; 2 MiB hugetlb pages when asked) sized to
  /// `size`: shared memory for a vhost-user backend, or the no-IOMMU arena's
  /// pages. The fd, or -1 with errno set (the callers say what to reserve).
  package static func memfd(_ name: String, size: Int, hugetlb: Bool) -> Int32 {
    vio_os_memfd(name, UInt64(clamping: size), hugetlb ? 1 : 0)
  }

  // MARK: time and limits

  /// Sleeps `milliseconds` (resumed after signals), e.g. between two attempts
  /// of a retry loop that has a deadline.
  package static func sleep(milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && Glibc.errno == EINTR { request = remaining }
  }

  /// RLIMIT_MEMLOCK soft limit in bytes (nil = unlimited).
  package static func memlockLimit() -> UInt64? {
    var lim = rlimit()
    guard getrlimit(__rlimit_resource_t(VIO_OS_RLIMIT_MEMLOCK), &lim) == 0 else { return nil }
    return lim.rlim_cur == rlim_t.max ? nil : UInt64(lim.rlim_cur)
  }
}

extension StringProtocol {
  package func trimmingWhitespace() -> String {
    var s = Substring(self)
    while let c = s.first, c == " " || c == "\n" || c == "\t" || c == "\r" { s = s.dropFirst() }
    while let c = s.last, c == " " || c == "\n" || c == "\t" || c == "\r" { s = s.dropLast() }
    return String(s)
  }
}
