@testable import PacketIO
import VirtioCore
import VirtioVFIO
import VirtioVhostUser
import XCTest

final class VhostUserPortTests: XCTestCase {
  func testParsing() throws {
    XCTAssertEqual(try PortAddress(parsing: "vhost-user:/tmp/a.sock"), .vhostUser(.client("/tmp/a.sock")))
    XCTAssertEqual(try PortAddress(parsing: "vhost-user-server:/tmp/b.sock"), .vhostUser(.server("/tmp/b.sock")))
    XCTAssertEqual(try PortAddress(parsing: "vhost-user:/tmp/a.sock").description, "vhost-user:/tmp/a.sock")
    XCTAssertEqual(try PortAddress(parsing: "vhost-user-server:/tmp/b.sock").description, "vhost-user-server:/tmp/b.sock")
    XCTAssertTrue(try PortAddress(parsing: "vhost-user:/tmp/a.sock").isVhostUser)
    XCTAssertFalse(try PortAddress(parsing: "vhost-user:/tmp/a.sock").isPCI)
    // Not a target: an interface that merely starts like one.
    XCTAssertEqual(try PortAddress(parsing: "vhost-user0"), .interface("vhost-user0"))
  }

  func testMissingSocketPathSaysWhatToWrite() {
    for text in ["vhost-user:", "vhost-user-server:"] {
      XCTAssertThrowsError(try PortAddress(parsing: text), text) { e in
        let err = e as! VirtioError
        XCTAssertEqual(err.code, .invalidArgument)
        XCTAssertTrue(err.message.contains("write vhost-user:/path"), "\(text): \(err.message)")
      }
    }
  }

  /// Refused before any port is opened (no VFIO, no socket touched).
  func testGroupMixingVFIOAndVhostUserIsRefused() throws {
    let ports = [try PortAddress(parsing: "pci:0000:00:02.0"), try PortAddress(parsing: "vhost-user:/nonexistent/x.sock")]
    do throws(VirtioError) {
      _ = try PortGroup.open(ports, options: PortOptions())
      XCTFail("a group of pci: and vhost-user: ports opened")
    } catch {
      XCTAssertEqual(error.code, .invalidArgument)
      XCTAssertTrue(error.message.contains("cannot share a group"), error.message)
      XCTAssertTrue(error.message.contains("pci:0000:00:02.0") && error.message.contains("vhost-user:/nonexistent/x.sock"), error.message)
      XCTAssertTrue(error.message.contains("one forwarder per kind"), error.message)
    }
    // vhost-user with vhost-user or with kernel interfaces is one memory domain.
    XCTAssertNoThrow(try PortGroup.checkMemoryDomains([.vhostUser(.client("/a")), .vhostUser(.client("/b")), .interface("eth0")]))
    XCTAssertNoThrow(try PortGroup.checkMemoryDomains([.pci(PCIAddress("0000:00:02.0")!), .interface("eth0")]))
  }

  /// The shared memory holds the rings and one full pool per worker.
  func testSharedMemoryIsSizedForRingsAndPools() {
    var o = PortOptions()
    o.queues = 2
    o.rxDescriptors = 1024
    o.txDescriptors = 512
    let one: [PortAddress] = [.vhostUser(.client("/a"))]
    let bytes = VirtioNetOpen.memoryBytes(for: one, options: o)
    let pool = 1 * (1024 + 512 + 4 * 512) + 256
    XCTAssertGreaterThanOrEqual(bytes, 2 * pool * 2048 + 2 * 2 * 1024 * 32)
    // A kernel port in the group may carry jumbo frames: larger buffers.
    XCTAssertGreaterThan(VirtioNetOpen.memoryBytes(for: one + [.interface("eth0")], options: o), 2 * bytes)
    o.vhostMemoryBytes = 256 << 20
    XCTAssertEqual(VirtioNetOpen.memoryBytes(for: one, options: o), 256 << 20)
    XCTAssertEqual(VirtioNetOpen.ringSize(o), 1024)
  }
}
