import PacketIO
import VirtioCore
import VirtioVFIO
import XCTest

final class PortAddressTests: XCTestCase {
  func testPCIAndInterfaces() throws {
    XCTAssertEqual(try PortAddress(parsing: "pci:0000:00:02.0"), .pci(PCIAddress("0000:00:02.0")!))
    XCTAssertEqual(try PortAddress(parsing: "pci:00:1f.7"), .pci(PCIAddress(domain: 0, bus: 0, device: 0x1f, function: 7)))
    XCTAssertEqual(try PortAddress(parsing: "eth1"), .interface("eth1"))
    XCTAssertEqual(try PortAddress(parsing: "veth-a.10"), .interface("veth-a.10"))
    XCTAssertEqual(try PortAddress(parsing: "pci:0000:00:02.0").description, "pci:0000:00:02.0")
    XCTAssertTrue(try PortAddress(parsing: "pci:0000:00:02.0").isPCI)
  }

  func testMistakesSayWhatToWrite() {
    for (text, hint) in [
      ("pci:", "not a PCI address"), ("pci:0000:00:99.0", "not a PCI address"), ("0000:00:02.0", "write pci:0000:00:02.0"),
      ("", "neither"), ("a/b", "neither"), ("sixteen-chars-xx", "neither"), ("eth0:1", "neither"),
    ] {
      XCTAssertThrowsError(try PortAddress(parsing: text), text) { e in
        let err = e as! VirtioError
        XCTAssertEqual(err.code, .invalidArgument)
        XCTAssertTrue(err.message.contains(hint), "\(text): \(err.message)")
      }
    }
  }
}
