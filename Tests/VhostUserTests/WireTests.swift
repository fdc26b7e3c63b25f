import CVhostSys
import Logging
import VirtioCore
import XCTest

@testable import VirtioVhostUser

/// The encoder against the spec's layouts and Linux's vhost uapi structs
/// (offsets exported by CVhostSys, pinned there with _Static_assert).
final class WireTests: XCTestCase {
  func testHeaderIsRequestFlagsSizeThenPayload() {
    let m = VhostUserWire.message(.SET_VRING_NUM, flags: VhostUserHeaderFlags.version | VhostUserHeaderFlags.needReply, payload: [1, 2, 3, 4, 5, 6, 7, 8])
    XCTAssertEqual(m.count, VhostUserLimits.headerSize + 8)
    XCTAssertEqual(VhostUserWire.get32(m, 0), 8)  // VHOST_USER_SET_VRING_NUM
    XCTAssertEqual(VhostUserWire.get32(m, 4), 0x9)  // version 1 | NEED_REPLY (bit 3)
    XCTAssertEqual(VhostUserWire.get32(m, 8), 8)
    XCTAssertEqual(Array(m[12...]), [1, 2, 3, 4, 5, 6, 7, 8])
  }

  func testVringStateAndAddrMatchLinuxLayouts() {
    let s = VhostUserWire.vringState(index: 3, num: 0x8000_0123)
    XCTAssertEqual(s.count, Int(VIO_VHOST_VRING_STATE_SIZE))
    XCTAssertEqual(VhostUserWire.get32(s, 0), 3)
    XCTAssertEqual(VhostUserWire.get32(s, 4), 0x8000_0123)

    let a = VhostUserWire.vringAddr(index: 1, flags: 0, desc: 0x1000, used: 0x2000, avail: 0x3000)
    XCTAssertEqual(a.count, Int(VIO_VHOST_VRING_ADDR_SIZE))
    XCTAssertEqual(VhostUserWire.get64(a, Int(VIO_VHOST_VRING_ADDR_DESC)), 0x1000)
    // Linux and the spec put used before avail; swapping them is the classic bug.
    XCTAssertEqual(VhostUserWire.get64(a, Int(VIO_VHOST_VRING_ADDR_USED)), 0x2000)
    XCTAssertEqual(VhostUserWire.get64(a, Int(VIO_VHOST_VRING_ADDR_AVAIL)), 0x3000)
  }

  func testMemoryTable() {
    let r = VhostUserMemoryRegion(guest_phys_addr: 0x7F00_0000_0000, memory_size: 64 << 20, userspace_addr: 0x7F00_0000_0000, mmap_offset: 0)
    let t = VhostUserWire.memoryTable([r, r])
    XCTAssertEqual(t.count, 8 + 2 * Int(VIO_VHOST_MEMORY_REGION_SIZE))
    XCTAssertEqual(VhostUserWire.get32(t, 0), 2)
    XCTAssertEqual(VhostUserWire.get64(t, 8), 0x7F00_0000_0000)
    XCTAssertEqual(VhostUserWire.get64(t, 16), 64 << 20)
    XCTAssertEqual(VhostUserWire.get64(t, 24), 0x7F00_0000_0000)
    XCTAssertEqual(VhostUserWire.get64(t, 32), 0)
  }

  func testPackedBaseCarriesTheWrapCounterInBit15() {
    XCTAssertEqual(VhostUserVringBase.encode(.start, packed: true), 0x8000)
    XCTAssertEqual(VhostUserVringBase.encode(RingPosition(index: 17, wrap: false), packed: true), 17)
    XCTAssertEqual(VhostUserVringBase.encode(RingPosition(index: 0xFFFF, wrap: true), packed: false), 0xFFFF)
    XCTAssertEqual(VhostUserVringBase.decode(0x8011, packed: true), RingPosition(index: 17, wrap: true))
    XCTAssertEqual(VhostUserVringBase.decode(0x8011, packed: false), RingPosition(index: 0x8011, wrap: true))
  }

  func testEndpointTargets() {
    XCTAssertEqual(VhostUserEndpoint(target: "vhost-user:/run/a.sock"), .client("/run/a.sock"))
    XCTAssertEqual(VhostUserEndpoint(target: "vhost-user-server:/run/b.sock"), .server("/run/b.sock"))
    XCTAssertNil(VhostUserEndpoint(target: "vhost-user:"))
    XCTAssertNil(VhostUserEndpoint(target: "0000:00:03.0"))
  }

  func testSharedMemoryIsZeroedAlignedAndItsOwnAddress() throws {
    var m = try SharedMemoryArena(byteCount: 1 << 20, pages: .small, logger: .init(label: "test"))
    XCTAssertEqual(m.byteCount, 2 << 20)  // rounded up to 2 MiB
    let a = try m.allocate(byteCount: 100, alignment: 64)
    let b = try m.allocate(byteCount: 4096, alignment: 4096)
    XCTAssertEqual(a.iova, UInt64(UInt(bitPattern: a.pointer)))
    XCTAssertEqual(b.iova % 4096, 0)
    XCTAssertTrue(m.contains(address: b.iova, length: 4096))
    XCTAssertFalse(m.contains(address: m.address + UInt64(m.byteCount) - 8, length: 16))
    XCTAssertEqual(b.pointer.load(as: UInt64.self), 0)
    XCTAssertThrowsError(try m.allocate(byteCount: 4 << 20, alignment: 64)) { e in
      XCTAssertTrue("\(e)".contains("memoryBytes"), "the error says how to get more: \(e)")
    }
  }

  func testConnectErrorsSayWhatToDo() {
    XCTAssertTrue(VhostUserChannel.connectError(path: "/x.sock", errno: ENOENT, waitedMilliseconds: 10).message.contains("start the backend"))
    XCTAssertTrue(VhostUserChannel.connectError(path: "/x.sock", errno: ECONNREFUSED, waitedMilliseconds: 10).message.contains("restart the backend"))
    XCTAssertNil(VhostUserChannel.nonSocketKind("/nonexistent-\(getpid())"))
    XCTAssertEqual(VhostUserChannel.nonSocketKind("/dev/null"), "a character device")
    XCTAssertEqual(VhostUserChannel.nonSocketKind("/tmp"), "a directory")
  }

  /// Issue 13: a regular file, a directory or /dev/null given as the socket was
  /// reported as "a stale socket file of a backend that exited".
  func testConnectingToWhatIsNotASocketSaysWhatItIs() throws {
    let file = "/tmp/vio-not-a-socket-\(getpid())"
    let fd = open(file, O_CREAT | O_WRONLY, 0o600)
    XCTAssertGreaterThanOrEqual(fd, 0)
    close(fd)
    defer { unlink(file) }
    for (path, kind) in [(file, "a regular file"), ("/tmp", "a directory"), ("/dev/null", "a character device")] {
      let channel = VhostUserChannel(endpoint: .client(path), logger: Logger(label: "test"), replyTimeoutMilliseconds: 100)
      do {
        try channel.connect(timeoutMilliseconds: 60_000, logFailure: false)
        XCTFail("connected to \(path)")
      } catch {
        XCTAssertEqual(error.code, .invalidArgument, "\(path): \(error.message)")
        XCTAssertTrue(error.message.contains("\(kind), not a unix socket"), error.message)
        XCTAssertFalse(error.message.contains("stale"), error.message)
      }
    }
  }
}

extension WireTests {
  func testRequestNamesAreTheSpecNames() {
    XCTAssertEqual("\(VhostUserRequest.SET_VRING_ADDR)", "VHOST_USER_SET_VRING_ADDR")
    XCTAssertEqual("\(VhostUserRequest.GET_STATUS)", "VHOST_USER_GET_STATUS")
  }
}
