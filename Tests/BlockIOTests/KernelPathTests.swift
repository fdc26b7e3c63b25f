import BlockIO
import VirtioVhostUser
import Glibc
import XCTest

/// BlockIO's kernel path (io_uring, O_DIRECT) on a temporary file. Every write
/// is checked by reading the file with pread(2), not through BlockIO.
final class KernelPathTests: XCTestCase {
  var path = ""

  override func setUp() {
    path = tempFile(bytes: 8 << 20)
  }

  override func tearDown() {
    unlink(path)
  }

  func testInfo() throws {
    let dev = try BlockDevice.open(path)
    let i = dev.info
    XCTAssertEqual(i.backend, .kernel)
    XCTAssertEqual(i.capacityBytes, 8 << 20)
    XCTAssertGreaterThanOrEqual(i.logicalBlockSize, 512)
    XCTAssertEqual(i.logicalBlockSize & (i.logicalBlockSize - 1), 0)
    XCTAssertFalse(i.readOnly)
    XCTAssertTrue(i.supportsFlush)
    XCTAssertTrue(i.details.contains("O_DIRECT"), i.details)
  }

  func testWriteReadFlushDiscardZeroes() throws {
    let dev = try BlockDevice.open(path)
    var q = try dev.makeQueue(0)
    var pool = try dev.makeBufferPool(count: 4, bufferSize: 65536)
    let w = pool.allocate()!
    let r = pool.allocate()!
    for i in 0..<65536 { w.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i * 7 + 1), toByteOffset: i, as: UInt8.self) }
    XCTAssertEqual(q.write(from: w, at: 1 << 20, tag: 1), .queued)
    q.kick()
    XCTAssertEqual(try waitOne(&q), BlockIOCompletion(tag: 1, op: .write, status: .ok, bytes: 65536))
    XCTAssertEqual(preadBytes(path, offset: 1 << 20, count: 65536), Array(w.bytes), "the file holds what was written")
    XCTAssertEqual(q.read(into: r, at: 1 << 20, tag: 2), .queued)
    XCTAssertEqual(q.flush(tag: 3), .queued)
    q.kick()
    var got = [try waitOne(&q), try waitOne(&q)]
    got.sort { $0.tag < $1.tag }
    XCTAssertEqual(got, [BlockIOCompletion(tag: 2, op: .read, status: .ok, bytes: 65536), BlockIOCompletion(tag: 3, op: .flush, status: .ok, bytes: 0)])
    XCTAssertEqual(Array(r.bytes), Array(w.bytes))

    XCTAssertEqual(q.discard(at: 1 << 20, length: 16384, tag: 4), .queued)
    XCTAssertEqual(q.writeZeroes(at: (1 << 20) + 32768, length: 8192, tag: 5), .queued)
    q.kick()
    XCTAssertEqual(try waitOne(&q).status, .ok)
    XCTAssertEqual(try waitOne(&q).status, .ok)
    let after = preadBytes(path, offset: 1 << 20, count: 65536)
    XCTAssertEqual(Array(after[0..<16384]), [UInt8](repeating: 0, count: 16384), "discarded range reads back as zeroes")
    XCTAssertEqual(Array(after[16384..<32768]), Array(w.bytes[16384..<32768]), "between the two ranges: untouched")
    XCTAssertEqual(Array(after[32768..<40960]), [UInt8](repeating: 0, count: 8192), "write-zeroes range")
    XCTAssertEqual(Array(after[40960...]), Array(w.bytes[40960...]))
    let s = q.stats
    XCTAssertEqual(s.requests, 5)
    XCTAssertEqual(s.reads, 1)
    XCTAssertEqual(s.writes, 1)
    XCTAssertEqual(s.flushes, 1)
    XCTAssertEqual(s.discards, 1)
    XCTAssertEqual(s.writeZeroes, 1)
    XCTAssertEqual(s.bytesRead, 65536)
    XCTAssertEqual(s.bytesWritten, 65536)
    XCTAssertEqual(s.errors, 0)
    XCTAssertEqual(s.notifications, 3, "one io_uring_enter per kick")
  }

  func testRefusals() throws {
    let dev = try BlockDevice.open(path)
    let bs = UInt64(dev.info.logicalBlockSize)
    var q = try dev.makeQueue(0)
    var pool = try dev.makeBufferPool(count: 1, bufferSize: 8192)
    let b = pool.allocate()!
    XCTAssertEqual(q.read(into: b, at: 8 << 20, length: Int(bs), tag: 0), .outOfRange)
    XCTAssertEqual(q.read(into: b, at: (8 << 20) - bs, length: Int(2 * bs), tag: 0), .outOfRange)
    XCTAssertEqual(q.read(into: b, at: 1, length: Int(bs), tag: 0), .unaligned)
    XCTAssertEqual(q.read(into: b, at: 0, length: 100, tag: 0), .unaligned)
    XCTAssertEqual(q.discard(at: 0, length: 0, tag: 0), .unaligned)
    XCTAssertEqual(q.inFlight, 0)
    XCTAssertEqual(q.stats.requests, 0)
  }

  func testReadOnlyRefusesWritesBeforeSubmission() throws {
    var o = BlockOpenOptions()
    o.readOnly = true
    let dev = try BlockDevice.open(BlockTarget.path(path), options: o)
    XCTAssertTrue(dev.info.readOnly)
    var q = try dev.makeQueue(0)
    var pool = try dev.makeBufferPool(count: 1, bufferSize: 4096)
    let b = pool.allocate()!
    b.bytes.initializeMemory(as: UInt8.self, repeating: 0xAB)
    XCTAssertEqual(q.write(from: b, at: 0, tag: 0), .readOnlyDevice)
    XCTAssertEqual(q.writeZeroes(at: 0, length: 4096, tag: 0), .readOnlyDevice)
    XCTAssertEqual(q.discard(at: 0, length: 4096, tag: 0), .readOnlyDevice)
    XCTAssertEqual(q.inFlight, 0)
    XCTAssertEqual(preadBytes(path, offset: 0, count: 4096), initial(offset: 0, count: 4096))
  }

  func testQueueFullAndInterrupts() throws {
    var o = BlockOpenOptions()
    o.queueDepth = 4
    let dev = try BlockDevice.open(BlockTarget.path(path), options: o)
    var q = try dev.makeQueue(0)
    q.setWaitMode(.interrupts)
    var pool = try dev.makeBufferPool(count: 8, bufferSize: 4096)
    var accepted = 0
    for i in 0..<8 {
      if q.read(into: pool.allocate()!, at: UInt64(i) * 4096, tag: UInt64(i)) == .queued { accepted += 1 }
    }
    XCTAssertEqual(accepted, 4)
    XCTAssertEqual(q.stats.queueFullEvents, 4)
    q.kick()
    var done = 0
    let deadline = monotonicNanoseconds() + 10_000_000_000
    while done < 4 && monotonicNanoseconds() < deadline {
      if q.poll() != nil { done += 1 } else { XCTAssertNotEqual(q.wait(timeoutMilliseconds: 5000), .broken) }
    }
    XCTAssertEqual(done, 4)
    XCTAssertEqual(q.read(into: pool.buffer(0), at: 0, tag: 9), .queued)
    let s = q.stats
    XCTAssertGreaterThan(s.queueFullNanoseconds, 0, "the time from the first refusal to the next accepted request")
    q.kick()
    _ = try waitOne(&q)
  }

  func testBatchSubmitAndPoll() throws {
    let dev = try BlockDevice.open(path)
    var q = try dev.makeQueue(0)
    var pool = try dev.makeBufferPool(count: 16, bufferSize: 4096)
    var reqs: [BlockRequest] = []
    for i in 0..<16 { reqs.append(BlockRequest(op: .read, offset: UInt64(i) * 8192, length: 4096, buffer: pool.allocate()!, tag: UInt64(i))) }
    XCTAssertEqual(q.submit(reqs.span), 16)
    q.kick()
    var seen = Set<UInt64>()
    let out = UnsafeMutableBufferPointer<BlockIOCompletion>.allocate(capacity: 8)
    defer { out.deallocate() }
    let deadline = monotonicNanoseconds() + 10_000_000_000
    while seen.count < 16 && monotonicNanoseconds() < deadline {
      var span = out.mutableSpan
      let n = q.poll(into: &span)
      for i in 0..<n {
        XCTAssertEqual(out[i].status, .ok)
        seen.insert(out[i].tag)
      }
      if n == 0 { _ = q.wait(timeoutMilliseconds: 100) }
    }
    XCTAssertEqual(seen, Set(0..<16))
    for i in 0..<16 {
      XCTAssertEqual(Array(pool.buffer(i).bytes), initial(offset: i * 8192, count: 4096), "buffer \(i)")
    }
  }

  func testTwoQueuesOnTwoThreads() throws {
    let dev = try BlockDevice.open(path)
    let a = Worker(try dev.makeQueue(0), try dev.makeBufferPool(count: 1, bufferSize: 4096), base: 0)
    let b = Worker(try dev.makeQueue(1), try dev.makeBufferPool(count: 1, bufferSize: 4096), base: 4 << 20)
    try a.start()
    try b.start()
    XCTAssertEqual(a.join(), 200)
    XCTAssertEqual(b.join(), 200)
    XCTAssertEqual(preadBytes(path, offset: 4096 * 5, count: 4096), [UInt8](repeating: 5, count: 4096))
    XCTAssertEqual(preadBytes(path, offset: (4 << 20) + 4096 * 7, count: 4096), [UInt8](repeating: 7, count: 4096))
  }

  func testOpenErrorsSayWhatToDo() {
    let missing = openError("/nonexistent/disk.img")
    XCTAssertEqual(missing?.code, .notFound)
    XCTAssertTrue(missing?.message.contains("/nonexistent/disk.img") ?? false)
    let bad = openError("pci:zz:00.0")
    XCTAssertEqual(bad?.code, .invalidArgument)
    XCTAssertTrue(bad?.message.contains("pci:0000:00:03.0") ?? false, "\(String(describing: bad))")
    XCTAssertEqual(openError("/dev/null")?.code, .invalidArgument)
    if access("/dev/shm", W_OK) == 0 {
      let shm = "/dev/shm/blockio-test-\(getpid())"
      let fd = open(shm, O_CREAT | O_RDWR, 0o600)
      ftruncate(fd, 1 << 20)
      close(fd)
      defer { unlink(shm) }
      // tmpfs takes O_DIRECT only from Linux 6.6; before, the error must say so.
      if let e = openError(shm) {
        XCTAssertEqual(e.code, .unsupported)
        XCTAssertTrue(e.message.contains("O_DIRECT"), e.message)
      }
      var o = BlockOpenOptions()
      o.directIO = false
      XCTAssertNil(openError(shm, o))
    }
  }

  func testTargetParsing() throws {
    XCTAssertEqual(try BlockTarget(parsing: "pci:0000:00:03.0").description, "pci:0000:00:03.0")
    XCTAssertEqual(try BlockTarget(parsing: "pci:00:04.1").description, "pci:0000:00:04.1")
    XCTAssertEqual(try BlockTarget(parsing: "/dev/vdb"), .path("/dev/vdb"))
    XCTAssertThrowsError(try BlockTarget(parsing: ""))
    XCTAssertThrowsError(try BlockTarget(parsing: "pci:0000:00:33.0"))
    XCTAssertEqual(try BlockTarget(parsing: "vhost-user:/tmp/blk.sock"), .vhostUser(.client("/tmp/blk.sock")))
    XCTAssertEqual(try BlockTarget(parsing: "vhost-user-server:/tmp/blk.sock"), .vhostUser(.server("/tmp/blk.sock")))
    XCTAssertEqual(try BlockTarget(parsing: "vhost-user:/tmp/blk.sock").description, "vhost-user:/tmp/blk.sock")
    XCTAssertTrue(try BlockTarget(parsing: "vhost-user:/tmp/blk.sock").isUserspace)
    XCTAssertFalse(try BlockTarget(parsing: "/dev/vdb").isUserspace)
    // A file whose name starts like a target, without the colon, is a path.
    XCTAssertEqual(try BlockTarget(parsing: "vhost-user.img"), .path("vhost-user.img"))
    for text in ["vhost-user:", "vhost-user-server:"] {
      XCTAssertThrowsError(try BlockTarget(parsing: text), text) { e in
        let err = e as! VirtioError
        XCTAssertEqual(err.code, .invalidArgument)
        XCTAssertTrue(err.message.contains("write vhost-user:/path"), err.message)
      }
    }
  }

  func testAsyncLayer() async throws {
    let dev = try BlockDevice.open(path)
    let io = try AsyncBlockQueue(device: dev, queue: 0, depth: 4, maxIOBytes: 16384)
    defer { io.close() }
    let data = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    try await io.write(data, at: 65536)
    try await io.flush()
    let back = try await io.read(at: 65536, length: 8192)
    XCTAssertEqual(back, data)
    XCTAssertEqual(preadBytes(path, offset: 65536, count: 8192), data)
    try await io.writeZeroes(at: 65536, length: 4096)
    let zeroed = try await io.read(at: 65536, length: 8192)
    XCTAssertEqual(Array(zeroed[0..<4096]), [UInt8](repeating: 0, count: 4096))
    do {
      _ = try await io.read(at: 8 << 20, length: 4096)
      XCTFail("read past the end succeeded")
    } catch {
      XCTAssertEqual(error.code, .refused)
    }
    // Several at once.
    try await withThrowingTaskGroup(of: Void.self) { g in
      for i in 0..<8 {
        g.addTask {
          let d = [UInt8](repeating: UInt8(i + 1), count: 4096)
          try await io.write(d, at: UInt64(i) * 4096)
          let r = try await io.read(at: UInt64(i) * 4096, length: 4096)
          XCTAssertEqual(r, d)
        }
      }
      try await g.waitForAll()
    }
  }

  func testCRC32C() {
    let s = Array("123456789".utf8)
    XCTAssertEqual(s.withUnsafeBytes { CRC32C.checksum($0) }, 0xE306_9283)
    XCTAssertEqual([UInt8]().withUnsafeBytes { CRC32C.checksum($0) }, 0)
    // 32 zero bytes (RFC 3720 B.4): 0x8A9136AA.
    XCTAssertEqual([UInt8](repeating: 0, count: 32).withUnsafeBytes { CRC32C.checksum($0) }, 0x8A91_36AA)
    // Continuing equals one pass, across lengths that exercise the 8-byte loop and the tail.
    let big = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 37) }
    let one = big.withUnsafeBytes { CRC32C.checksum($0) }
    let two = big.withUnsafeBytes { b in CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[13...]), continuing: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<13]))) }
    XCTAssertEqual(one, two)
  }
}

// MARK: helpers

/// A file of `bytes` whose byte i is `initialByte(i)`, in the test's temp directory.
func tempFile(bytes: Int) -> String {
  var template = Array("/tmp/blockio-test-XXXXXX".utf8CString)
  let fd = mkstemp(&template)
  precondition(fd >= 0)
  let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
  var chunk = [UInt8](repeating: 0, count: 1 << 20)
  var off = 0
  while off < bytes {
    for i in 0..<chunk.count { chunk[i] = initialByte(off + i) }
    _ = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(off)) }
    off += chunk.count
  }
  close(fd)
  return path
}

func initialByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: (i >> 9) &+ i &* 3) }
func initial(offset: Int, count: Int) -> [UInt8] { (offset..<offset + count).map(initialByte) }

func preadBytes(_ path: String, offset: Int, count: Int) -> [UInt8] {
  let fd = open(path, O_RDONLY)
  defer { close(fd) }
  var b = [UInt8](repeating: 0, count: count)
  let n = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
  return Array(b[0..<max(n, 0)])
}

/// The error opening `target` fails with, or nil when it opens.
func openError(_ target: String, _ options: BlockOpenOptions = BlockOpenOptions()) -> VirtioError? {
  do {
    _ = try BlockDevice.open(target, options: options)
    return nil
  } catch {
    return error
  }
}

func waitOne(_ q: inout BlockQueue, seconds: Double = 10) throws -> BlockIOCompletion {
  let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
  while monotonicNanoseconds() < deadline {
    if let c = q.poll() { return c }
    if q.wait(timeoutMilliseconds: 100) == .broken { break }
  }
  throw XCTSkip("no completion within \(seconds) s") as Error
}

/// Writes 200 blocks on its own queue and thread, reading each back.
final class Worker: @unchecked Sendable {
  var queue: BlockQueue?
  var pool: BlockBufferPool?
  let base: UInt64
  var thread: WorkerThread?
  var ok = 0

  init(_ q: consuming BlockQueue, _ p: consuming BlockBufferPool, base: UInt64) {
    queue = consume q
    pool = consume p
    self.base = base
  }

  func start() throws {
    thread = try WorkerThread { self.run() }
  }

  func run() {
    var q = queue.take()!
    var pool = self.pool.take()!
    let b = pool.allocate()!
    for i in 0..<200 {
      let block = UInt64(i % 16)
      b.bytes.initializeMemory(as: UInt8.self, repeating: UInt8(block))
      guard q.write(from: b, at: base + block * 4096, tag: UInt64(i)) == .queued else { continue }
      q.kick()
      guard let c = try? waitOne(&q), c.status == .ok else { continue }
      guard q.read(into: b, at: base + block * 4096, tag: UInt64(i)) == .queued else { continue }
      q.kick()
      guard let r = try? waitOne(&q), r.status == .ok, b.bytes.allSatisfy({ $0 == UInt8(block) }) else { continue }
      ok += 1
    }
  }

  func join() -> Int {
    thread.take()?.join()
    return ok
  }
}
