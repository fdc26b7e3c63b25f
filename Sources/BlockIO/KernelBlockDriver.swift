import CBlockSys
import Glibc
import VirtioVFIO

/// The kernel path: a block device or file opened with O_DIRECT, one io_uring
/// per queue. The device stays with its kernel driver (virtio_blk, nvme, ...).
final class KernelBlockDriver: BlockDriver, @unchecked Sendable {
  let fd: Int32
  let info: BlockDeviceInfo
  let queueLimit: Int

  private init(fd: Int32, info: BlockDeviceInfo, queueLimit: Int) {
    self.fd = fd
    self.info = info
    self.queueLimit = queueLimit
  }

  deinit { close(fd) }

  /// `fallback`: why a `pci:` target ended up here (reported in `info.fallback`).
  static func open(_ path: String, options: BlockOpenOptions, fallback: KernelFallbackReason? = nil) throws(VirtioError) -> KernelBlockDriver {
    let direct = options.directIO ? VIO_O_DIRECT : 0
    var st = stat()
    if stat(path, &st) == 0 {
      let kind = st.st_mode & S_IFMT
      guard kind == S_IFBLK || kind == S_IFREG else {
        throw VirtioError(.invalidArgument, "\(path) is neither a block device nor a regular file; give a disk (/dev/vdb), a file, or pci:DDDD:BB:DD.F")
      }
    }
    var readOnly = options.readOnly
    var fd = Glibc.open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | direct)
    if fd < 0 && !readOnly && (errno == EROFS || errno == EACCES || errno == EPERM) {
      // A read-only device or file: open it so, and refuse writes up front.
      fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | direct)
      if fd >= 0 { readOnly = true }
    }
    guard fd >= 0 else {
      let e = errno
      switch e {
      case ENOENT: throw VirtioError(.notFound, "\(path) does not exist; give a block device (/dev/vdb) or a file, or pci:DDDD:BB:DD.F", errno: e)
      case EACCES, EPERM: throw VirtioError(.permissionDenied, "no permission to open \(path); run as root or join the disk group", errno: e)
      case EINVAL where direct != 0:
        throw VirtioError(.unsupported, "\(path): the file system does not support O_DIRECT (tmpfs?); put the file elsewhere or turn direct I/O off", errno: e)
      case EBUSY: throw VirtioError(.deviceBusy, "\(path) is in use (mounted or opened exclusively)", errno: e)
      default: throw VirtioError(.system, "cannot open \(path): \(Sys.errnoText(e))", errno: e)
      }
    }
    do throws(VirtioError) {
      var info = try describe(fd: fd, path: path, readOnly: readOnly, options: options)
      info.fallback = fallback
      return KernelBlockDriver(fd: fd, info: info, queueLimit: info.queueCount)
    } catch {
      close(fd)
      throw error
    }
  }

  /// Geometry from the block-device ioctls and sysfs, or from stat/statx for a file.
  static func describe(fd: Int32, path: String, readOnly ro: Bool, options: BlockOpenOptions) throws(VirtioError) -> BlockDeviceInfo {
    var st = stat()
    guard fstat(fd, &st) == 0 else {
      throw VirtioError(.system, "fstat \(path): \(Sys.errnoText(errno))", errno: errno)
    }
    var readOnly = ro
    let depth = max(1, min(options.queueDepth, 4096))
    let queues = max(1, options.queues ?? 16)
    let how = options.directIO ? "O_DIRECT" : "buffered"
    switch st.st_mode & S_IFMT {
    case S_IFBLK:
      var bytes: UInt64 = 0
      var logical: UInt32 = 512
      var physical: UInt32 = 512
      var optimal: UInt32 = 0
      var roFlag: Int32 = 0
      guard vio_blk_size_bytes(fd, &bytes) == 0 else {
        throw VirtioError(.system, "\(path): BLKGETSIZE64 failed", errno: errno)
      }
      _ = vio_blk_logical_block_size(fd, &logical)
      _ = vio_blk_physical_block_size(fd, &physical)
      _ = vio_blk_optimal_io_size(fd, &optimal)
      if vio_blk_read_only(fd, &roFlag) == 0 && roFlag != 0 { readOnly = true }
      let sys = SysfsQueue(device: UInt64(st.st_rdev))
      let discard = (sys.value("discard_max_bytes") ?? 0) > 0
      let maxKB = sys.value("max_sectors_kb") ?? 1024
      let cache = sys.text("write_cache") ?? "write back"
      return BlockDeviceInfo(
        target: path, backend: .kernel, capacityBytes: bytes, logicalBlockSize: Int(max(logical, 512)),
        physicalBlockSize: Int(max(physical, logical)), optimalIOSize: Int(optimal),
        maxTransferBytes: Int(maxKB) * 1024, queueCount: queues, queueDepth: depth, readOnly: readOnly,
        supportsFlush: true, supportsDiscard: discard, supportsWriteZeroes: true, writebackCache: cache == "write back",
        serial: sys.serial, details: "kernel block device \(sys.name ?? "?"), io_uring, \(how)")
    case S_IFREG:
      var offAlign: UInt32 = 0
      var memAlign: UInt32 = 0
      _ = vio_dio_alignment(fd, &offAlign, &memAlign)
      let block = max(512, Int(offAlign))
      let size = UInt64(st.st_size) - UInt64(st.st_size) % UInt64(block)
      return BlockDeviceInfo(
        target: path, backend: .kernel, capacityBytes: size, logicalBlockSize: block, physicalBlockSize: max(block, Int(st.st_blksize)),
        optimalIOSize: Int(st.st_blksize), maxTransferBytes: 1 << 20, queueCount: queues, queueDepth: depth,
        readOnly: readOnly, supportsFlush: true, supportsDiscard: true, supportsWriteZeroes: true, writebackCache: true,
        serial: nil, details: "regular file, io_uring, \(how)")
    default:
      throw VirtioError(.invalidArgument, "\(path) is neither a block device nor a regular file")
    }
  }

  func makeQueue(_ index: Int) throws(VirtioError) -> BlockQueue {
    guard index >= 0, index < queueLimit else {
      throw VirtioError(.invalidArgument, "queue \(index): this device was opened with \(queueLimit) queues (BlockOpenOptions.queues)")
    }
    let backend = try KernelBlockBackend(fd: fd, depth: info.queueDepth, info: info)
    return BlockQueue(kernel: backend, index: index, owner: self)
  }

  func makeBufferPool(count: Int, bufferSize: Int) throws(VirtioError) -> BlockBufferPool {
    // O_DIRECT wants memory aligned to the logical block size; pages are.
    let size = try BlockBufferPool.checkedBufferSize(count: count, bufferSize: bufferSize)
    return try BlockBufferPool(anonymousBufferSize: size, count: count)
  }

  func refreshGeometry() -> BlockDeviceInfo? { nil }
  /// The kernel's driver handles a removal (the file fails its requests).
  func checkRemoved() -> Bool { false }
}

/// /sys/dev/block/MAJ:MIN: the queue limits and the serial of a block device
/// (a partition's queue/ is its disk's).
struct SysfsQueue {
  let dir: String

  /// glibc's gnu_dev_major/minor (macros Swift does not import).
  init(device d: UInt64) {
    let major = ((d >> 32) & 0xFFFF_F000) | ((d >> 8) & 0xFFF)
    let minor = ((d >> 12) & 0xFFFF_FF00) | (d & 0xFF)
    dir = "/sys/dev/block/\(major):\(minor)"
  }

  func text(_ name: String) -> String? {
    read("\(dir)/queue/\(name)") ?? read("\(dir)/../queue/\(name)")
  }

  func value(_ name: String) -> UInt64? { text(name).flatMap { UInt64($0) } }

  var serial: String? { read("\(dir)/serial") ?? read("\(dir)/device/serial") }

  var name: String? {
    read("\(dir)/uevent")?.split(separator: "\n").first { $0.hasPrefix("DEVNAME=") }.map { String($0.dropFirst(8)) }
  }

  private func read(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var buf = [CChar](repeating: 0, count: 4096)
    let n = fread(&buf, 1, buf.count - 1, f)
    guard n > 0 else { return nil }
    let s = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return s.trimmingCharacters()
  }
}

extension String {
  func trimmingCharacters() -> String {
    var s = Substring(self)
    while let c = s.last, c == "\n" || c == " " || c == "\0" { s = s.dropLast() }
    return String(s)
  }
}
