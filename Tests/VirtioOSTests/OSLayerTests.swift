import Glibc
import SystemPackage
import XCTest

@testable import VirtioOS

/// The OS layer without hardware: eventfd counting, epoll tokens and edge
/// trigger, poll, owned descriptors, errors, files, the clock, threads and the
/// stop request.
final class OSLayerTests: XCTestCase {
  func testEventFDCountsSignalsAndDrainsToZero() throws {
    let fd = try EventFD.create()
    XCTAssertEqual(EventFD.drain(fd.raw), 0, "non-blocking: an empty counter reads as 0")
    XCTAssertTrue(EventFD.signal(fd.raw))
    XCTAssertTrue(EventFD.signal(fd.raw))
    XCTAssertEqual(EventFD.drain(fd.raw), 2)
    XCTAssertEqual(EventFD.drain(fd.raw), 0)
  }

  func testEpollReturnsTheTokenOfTheSignalledDescriptor() throws {
    let a = try EventFD.create()
    let b = try EventFD.create()
    let epoll = try Epoll()
    try epoll.add(a.raw, token: 7)
    try epoll.add(b.raw, token: 9)
    var tokens = [UInt64](repeating: 0, count: 4)
    XCTAssertEqual(tokens.withUnsafeMutableBufferPointer { epoll.wait(into: $0, timeoutMilliseconds: 0) }, 0)
    EventFD.signal(b.raw)
    let n = tokens.withUnsafeMutableBufferPointer { epoll.wait(into: $0, timeoutMilliseconds: 1000) }
    XCTAssertEqual(n, 1)
    XCTAssertEqual(tokens[0], 9)
  }

  func testEdgeTriggeredEpollWakesOncePerSignalWithoutReading() throws {
    let fd = try EventFD.create()
    let epoll = try Epoll()
    try epoll.add(fd.raw, token: 0, edgeTriggered: true)
    EventFD.signal(fd.raw)
    XCTAssertEqual(epoll.wait(timeoutMilliseconds: 1000), 1)
    XCTAssertEqual(epoll.wait(timeoutMilliseconds: 0), 0, "the same signal does not wake twice")
    EventFD.signal(fd.raw)
    let raw = epoll.detach()
    defer { Sys.close(raw) }
    XCTAssertEqual(Epoll.wait(raw, timeoutMilliseconds: 1000), 1)
    XCTAssertEqual(EventFD.drain(fd.raw), 2, "never read by the waits")
  }

  func testPollReportsWhichDescriptorsAreReadable() throws {
    let a = try EventFD.create()
    let b = try EventFD.create()
    XCTAssertEqual(Poll.readable(a.raw, timeoutMilliseconds: 0), 0)
    EventFD.signal(b.raw)
    var fds: [Int32] = [a.raw, b.raw]
    var ready: [UInt8] = [9, 9]
    let n = fds.withUnsafeMutableBufferPointer { f in
      ready.withUnsafeMutableBufferPointer { Poll.readable(f.baseAddress!, count: 2, timeoutMilliseconds: 1000, ready: $0.baseAddress!) }
    }
    XCTAssertEqual(n, 1)
    XCTAssertEqual(ready, [0, 1])
    XCTAssertEqual(Poll.readable(b.raw, timeoutMilliseconds: 0), 1)
  }

  func testOwnedFDClosesOnceAndDetachHandsOver() throws {
    let raw: Int32
    do {
      let owned = try EventFD.create()
      raw = owned.raw
      XCTAssertGreaterThanOrEqual(fcntl(raw, F_GETFD), 0)
    }
    XCTAssertEqual(fcntl(raw, F_GETFD), -1, "closed when the owner went away")
    let kept = try EventFD.create().detach()
    XCTAssertGreaterThanOrEqual(fcntl(kept, F_GETFD), 0, "detach does not close")
    Sys.close(kept)
  }

  func testSysErrorSaysTheCallTheReasonAndWhatToDo() throws {
    let e = SysError("open /dev/vfio/vfio", errno: ENOENT, advice: "run `modprobe vfio-pci`")
    XCTAssertEqual(e.code, .noSuchFileOrDirectory)
    XCTAssertEqual(e.description, "open /dev/vfio/vfio: No such file or directory (errno 2); run `modprobe vfio-pci`")
    XCTAssertThrowsError(try Sys.open("/nonexistent/\(getpid())", O_RDONLY)) { error in
      XCTAssertEqual((error as? SysError)?.errno, ENOENT)
    }
  }

  func testFilesRoundTripThroughSys() throws {
    let dir = "/tmp/virtio-os-\(getpid())"
    XCTAssertEqual(mkdir(dir, 0o700), 0)
    defer {
      Sys.unlink("\(dir)/attr")
      rmdir(dir)
    }
    // Like a sysfs attribute, the file exists before writeText (which does not create).
    try FileDescriptor.open(FilePath("\(dir)/attr"), .writeOnly, options: .create, permissions: .ownerReadWrite).close()
    try Sys.writeText("\(dir)/attr", "  vfio-pci\nsecond\n")
    XCTAssertEqual(Sys.readText("\(dir)/attr"), "  vfio-pci\nsecond\n")
    XCTAssertEqual(Sys.readLine("\(dir)/attr"), "vfio-pci")
    XCTAssertEqual(Sys.readBytes("\(dir)/attr", count: 4), Array("  vf".utf8))
    XCTAssertEqual(Sys.listDirectory(dir), ["attr"])
    XCTAssertTrue(Sys.exists("\(dir)/attr"))
    let fd = try Sys.open("\(dir)/attr", O_RDWR)
    defer { Sys.close(fd) }
    var word: UInt32 = 0x6F69_6676  // "vfio"
    try Sys.pwrite(fd, &word, 4, 2, "attr")
    var back: UInt32 = 0
    try Sys.pread(fd, &back, 4, 2, "attr")
    XCTAssertEqual(back, word)
    XCTAssertThrowsError(try Sys.pread(fd, &back, 4, 1 << 20, "attr")) { error in
      XCTAssertEqual((error as? SysError)?.errno, EIO, "a read past the end is a short transfer")
    }
  }

  func testMonotonicClockAdvances() {
    let t0 = monotonicNanoseconds()
    Sys.sleep(milliseconds: 5)
    let t1 = monotonicNanoseconds()
    XCTAssertGreaterThanOrEqual(t1 &- t0, 4_000_000)
    XCTAssertGreaterThan(threadCPUNanoseconds(), 0)
    XCTAssertGreaterThan(processCPUNanoseconds(), 0)
  }

  func testWorkerThreadRunsItsBodyOnAnotherThread() throws {
    // (StopSignal.request() is process-wide and never undone: not exercised here,
    // other tests in this process poll it. vio-fwd and Tests/net/veth-fwd do.)
    let fd = try EventFD.create()
    let raw = fd.raw
    let caller = pthread_self()
    let thread = try WorkerThread {
      if pthread_equal(pthread_self(), caller) == 0 { EventFD.signal(raw) }
    }
    thread.join()
    XCTAssertEqual(EventFD.drain(raw), 1, "the body ran, on a thread of its own")
    XCTAssertGreaterThanOrEqual(StopSignal.fd, 0)
    XCTAssertEqual(Poll.readable(StopSignal.fd, timeoutMilliseconds: 0), StopSignal.requested ? 1 : 0)
  }

  func testPinnedWorkerRunsOnlyOnItsCPUAndABadCPUIsRefused() throws {
    let cpu = try XCTUnwrap(try allowedCPUs().last)
    let fd = try EventFD.create()
    let raw = fd.raw
    let thread = try WorkerThread(cpu: cpu) {
      // The thread's own affinity mask (sched_getaffinity of the calling thread).
      if (try? allowedCPUs()) == [cpu] { EventFD.signal(raw) }
    }
    thread.join()
    XCTAssertEqual(EventFD.drain(raw), 1, "the worker's mask was exactly CPU \(cpu) from its first instruction")
    // A CPU outside the cpu_set_t (and outside any mask) fails at start, with the CPU named.
    do {
      let t = try WorkerThread(cpu: 4096) {}
      t.join()
      XCTFail("a worker pinned to CPU 4096 started")
    } catch {
      XCTAssertTrue("\(error)".contains("CPU 4096"), "\(error)")
    }
  }
}
