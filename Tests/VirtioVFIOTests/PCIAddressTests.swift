import VirtioVFIO
import XCTest

final class PCIAddressTests: XCTestCase {
  func testParsesLongAndShortForms() {
    XCTAssertEqual(PCIAddress("0000:00:02.0"), PCIAddress(domain: 0, bus: 0, device: 2, function: 0))
    XCTAssertEqual(PCIAddress("00:1f.7"), PCIAddress(domain: 0, bus: 0, device: 0x1F, function: 7))
    XCTAssertEqual(PCIAddress("10000:af:1e.3"), PCIAddress(domain: 0x10000, bus: 0xAF, device: 0x1E, function: 3))
  }

  func testFormatsAsSysfsDoes() {
    XCTAssertEqual(PCIAddress(domain: 0, bus: 0, device: 2, function: 0).description, "0000:00:02.0")
    XCTAssertEqual(PCIAddress(domain: 1, bus: 0xAB, device: 0x1F, function: 7).description, "0001:ab:1f.7")
    XCTAssertEqual(PCIAddress("00:03.1")?.description, "0000:00:03.1")
  }

  func testRejectsMalformedAddresses() {
    for bad in ["", "00:02", "0000:00:02", "00:20.0", "00:02.8", "00:02.0.1", "xx:02.0", "0000:100:02.0", "0000:00:02.", ":00:02.0"] {
      XCTAssertNil(PCIAddress(bad), bad)
    }
  }
}
