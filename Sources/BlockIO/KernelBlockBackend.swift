import CBlockSys
import Glibc
import VirtioBlk

/// The kernel path of a `BlockQueue`: one io_uring per queue over the device
/// or file (opened with O_DIRECT), a fixed table of request slots, and the
/// same validation as the virtio path so both refuse the same requests.
/// Owned by one thread.
@usableFromInline package struct KernelBlockBackend: ~Copyable, SpinnableBackend {
  @usableFromInline let ring: UnsafeMutablePointer<vio_uring>
  @usableFromInline let fd: Int32
  /// `fd` is the ring's registered file 0 (IOSQE_FIXED_FILE).
  @usableFromInline let fixed: Bool
  @usableFromInline let blockSize: UInt64
  @usableFromInline let capacityBytes: UInt64
  @usableFromInline let readOnly: Bool
  @usableFromInline let supportsFlush: Bool
  @usableFromInline let supportsDiscard: Bool
  @usableFromInline let supportsWriteZeroes: Bool
  @usableFromInline let depth: Int
  @usableFromInline let slots: UnsafeMutablePointer<KernelSlot>
  @usableFromInline let freeSlots: UnsafeMutablePointer<UInt32>
  @usableFromInline var freeCount: Int
  @usableFromInline var notifications: UInt64 = 0
  @usableFromInline var interrupts: UInt64 = 0
  @usableFromInline var stash: BlockIOCompletion? = nil
  var completionBatch = 1

  init(fd: Int32, depth: Int, info: BlockDeviceInfo) throws(VirtioError) {
    let ring = UnsafeMutablePointer<vio_uring>.allocate(capacity: 1)
    let r = vio_uring_init(ring, UInt32(depth))
    guard r == 0 else {
      ring.deallocate()
      let why = -r == ENOSYS || -r == EPERM
        ? "io_uring is not available (disabled by kernel.io_uring_disabled, a seccomp filter, or a kernel before 5.6)"
        : Sys.errnoText(-r)
      throw VirtioError(.unsupported, "io_uring_setup(\(depth) entries) failed: \(why); the kernel path needs io_uring", errno: -r)
    }
    self.ring = ring
    self.fd = fd
    self.fixed = vio_uring_register_file(ring, fd) == 0
    self.blockSize = UInt64(info.logicalBlockSize)
    self.capacityBytes = info.capacityBytes
    self.readOnly = info.readOnly
    self.supportsFlush = info.supportsFlush
    self.supportsDiscard = info.supportsDiscard
    self.supportsWriteZeroes = info.supportsWriteZeroes
    // Never more requests in flight than the CQ holds (it is twice the SQ).
    self.depth = Int(vio_uring_sq_entries(ring))
    // SAFETY: driver-private tables of `depth` entries, freed in deinit.
    slots = .allocate(capacity: self.depth)
    slots.initialize(repeating: KernelSlot(), count: self.depth)
    freeSlots = .allocate(capacity: self.depth)
    for i in 0..<self.depth { freeSlots[i] = UInt32(self.depth - 1 - i) }
    freeCount = self.depth
  }

  deinit {
    // Closing the ring cancels what is in flight; the buffers stay valid until
    // the pool goes, which the caller drops after the queue.
    vio_uring_exit(ring)
    ring.deallocate()
    slots.deallocate()
    freeSlots.deallocate()
  }

  @inlinable var inFlight: Int { depth &- freeCount }

  @inlinable mutating func submit(
    _ op: BlockOperation, offset: UInt64, length: Int, buffer: BlockBuffer?, tag: UInt64
  ) -> BlockSubmitResult {
    let len = UInt64(max(length, 0))
    var opcode: UInt8
    var addr: UInt64 = 0
    var rwLen: UInt32 = 0
    var opFlags: UInt32 = 0
    var off = offset
    switch op {
    case .read, .write:
      if op == .write && readOnly { return .readOnlyDevice }
      guard let b = buffer, len > 0, len <= UInt64(UInt32.max) else { return .unaligned }
      guard offset % blockSize == 0, len % blockSize == 0 else { return .unaligned }
      guard offset <= capacityBytes, len <= capacityBytes &- offset else { return .outOfRange }
      opcode = op == .read ? VIO_IORING_OP_READ : VIO_IORING_OP_WRITE
      addr = UInt64(UInt(bitPattern: b.pointer))
      rwLen = UInt32(len)
    case .flush:
      guard supportsFlush else { return .unsupportedOperation }
      opcode = VIO_IORING_OP_FSYNC
      opFlags = VIO_IORING_FSYNC_DATASYNC
      off = 0
    case .discard, .writeZeroes:
      guard op == .discard ? supportsDiscard : supportsWriteZeroes else { return .unsupportedOperation }
      if readOnly { return .readOnlyDevice }
      guard len > 0, offset % blockSize == 0, len % blockSize == 0 else { return .unaligned }
      guard offset <= capacityBytes, len <= capacityBytes &- offset else { return .outOfRange }
      // io_uring_prep_fallocate: mode in len, length in addr.
      opcode = VIO_IORING_OP_FALLOCATE
      addr = len
      rwLen = UInt32(bitPattern: op == .discard ? VIO_FALLOC_PUNCH_HOLE_KEEP_SIZE : VIO_FALLOC_ZERO_RANGE_KEEP_SIZE)
    case .getID:
      return .unsupportedOperation
    }
    guard freeCount > 0 else { return .queueFull }
    let slot = freeSlots[freeCount &- 1]
    guard vio_uring_queue(ring, opcode, fixed ? 0 : fd, fixed ? 1 : 0, addr, rwLen, off, opFlags, UInt64(slot)) == 0 else {
      return .queueFull
    }
    freeCount &-= 1
    slots[Int(slot)] = KernelSlot(tag: tag, length: op == .read || op == .write ? UInt32(len) : 0, op: op)
    return .queued
  }

  /// Hands every filled SQE to the kernel with one io_uring_enter (liburing's
  /// io_uring_submit: also SQEs a failed submit left behind).
  @inlinable mutating func kick() {
    guard vio_uring_sq_pending(ring) > 0 else { return }
    notifications &+= 1
    _ = vio_uring_submit(ring)
  }

  @inlinable mutating func next() -> BlockIOCompletion? {
    if let s = stash {
      stash = nil
      return s
    }
    var ud: UInt64 = 0
    var res: Int32 = 0
    // COOP_TASKRUN: liburing's peek enters the kernel when finished requests wait there.
    guard inFlight > 0, vio_uring_peek(ring, &ud, &res) != 0 else { return nil }
    // user_data is our slot number: the kernel echoes what we wrote, but check anyway.
    guard ud < UInt64(depth) else { return nil }
    let slot = Int(ud)
    let s = slots[slot]
    freeSlots[freeCount] = UInt32(slot)
    freeCount &+= 1
    let status: BlockIOStatus
    if res >= 0 {
      // A short transfer inside the device's range is a failure to the caller.
      status = (s.op == .read || s.op == .write) && UInt32(res) != s.length ? .ioError : .ok
    } else {
      switch -res {
      case EIO: status = .ioError
      case EOPNOTSUPP, ENOTTY: status = .unsupported
      default: status = .system(errno: -res)
      }
    }
    return BlockIOCompletion(tag: s.tag, op: s.op, status: status, bytes: status == .ok ? Int(s.length) : 0)
  }

  /// io_uring_wait_cqe_timeout: the process sleeps until the device's
  /// interrupt has completed a request.
  mutating func sleep(_ timeoutMilliseconds: Int) -> BlockWaitResult {
    guard inFlight > 0 else { return .ready }
    interrupts &+= 1
    let ns = Int64(max(timeoutMilliseconds, 1)) * 1_000_000
    // io_uring_enter's min_complete: one wake-up for the batch.
    let r = vio_uring_wait(ring, ns, UInt32(min(max(completionBatch, 1), inFlight)))
    if r == -ETIME { return vio_uring_cq_ready(ring) > 0 ? .ready : .timedOut }
    if r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY { return .failed(errno: -r) }
    return .ready
  }
}

/// Driver-private record of one request in flight on the kernel path.
@usableFromInline struct KernelSlot: BitwiseCopyable {
  @usableFromInline var tag: UInt64 = 0
  @usableFromInline var length: UInt32 = 0
  @usableFromInline var op: BlockOperation = .read

  @inlinable init() {}
  @inlinable init(tag: UInt64, length: UInt32, op: BlockOperation) {
    self.tag = tag
    self.length = length
    self.op = op
  }
}

extension KernelBlockBackend {
  /// io_uring requests do not break: errors come back per request.
  var isBroken: Bool { false }
  var readyWithoutWaiting: Bool { stash != nil || vio_uring_cq_ready(ring) > 0 }
  mutating func afterHybridSleep() {}
}
