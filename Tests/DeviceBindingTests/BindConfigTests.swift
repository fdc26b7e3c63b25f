import DeviceBinding
import Foundation
import XCTest

/// /etc/vio/bind.conf: parsing, and which /dev/vfio/N the udev rule may open to group vio.
final class BindConfigTests: XCTestCase {
  var root = ""

  override func setUpWithError() throws { root = NSTemporaryDirectory() + "vio-bindconf-\(UUID().uuidString)" }
  override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

  func testPackagedDefaultListsNothing() throws {
    let text = try String(contentsOfFile: packageFile("packaging/bind.conf"), encoding: .utf8)
    XCTAssertEqual(try BindConfig.parse(text, path: "bind.conf").addresses, [])
  }

  func testAddressesCommentsAndShortForm() throws {
    let c = try BindConfig.parse("# boot list\n0000:00:07.0   # the forwarder's port\n\n\t00:08.1\n0000:00:07.0\n", path: "f")
    XCTAssertEqual(c.addresses, ["0000:00:07.0", "0000:00:08.1"])
  }

  func testMalformedLinesSayWhereAndWhat() {
    for (text, line, words) in [("0000:00:07.0\neth0\n", 2, "'eth0' is not a PCI address"), ("0000:00:07.0 0000:00:08.0", 1, "one PCI address per line"),
                                ("0000:00:20.0", 1, "not a PCI address"), ("0000:00:07.8", 1, "not a PCI address")] {
      XCTAssertThrowsError(try BindConfig.parse(text, path: "/etc/vio/bind.conf")) { e in
        let d = "\(e)"
        XCTAssertTrue(d.hasPrefix("/etc/vio/bind.conf:\(line): "), d)
        XCTAssertTrue(d.contains(words), d)
      }
    }
  }

  func testMissingFileIsAnError() {
    XCTAssertThrowsError(try BindConfig.load(path: root + "/none.conf")) { e in XCTAssertTrue("\(e)".contains("no such file"), "\(e)") }
  }

  func testGroupListedOnlyWhenEveryMemberIs() throws {
    for (g, members) in [(5, ["0000:00:07.0"]), (6, ["0000:00:08.0", "0000:00:08.1"]), (7, [String]())] {
      try FileManager.default.createDirectory(atPath: "\(root)/kernel/iommu_groups/\(g)/devices", withIntermediateDirectories: true)
      for m in members { try "".write(toFile: "\(root)/kernel/iommu_groups/\(g)/devices/\(m)", atomically: true, encoding: .utf8) }
    }
    let c = BindConfig(addresses: ["0000:00:07.0", "0000:00:08.0"])
    XCTAssertTrue(c.listsGroup(5, sysfsRoot: root))
    XCTAssertFalse(c.listsGroup(6, sysfsRoot: root), "08.1 is not listed")
    XCTAssertFalse(c.listsGroup(7, sysfsRoot: root), "an empty group")
    XCTAssertFalse(c.listsGroup(9, sysfsRoot: root), "no such group")
    XCTAssertFalse(BindConfig(addresses: []).listsGroup(5, sysfsRoot: root))
  }

  func testEmptyListMovesNothing() throws {
    // A fake function on virtio-pci: an empty list must not even look at it.
    try FileManager.default.createDirectory(atPath: "\(root)/bus/pci/devices/0000:00:07.0", withIntermediateDirectories: true)
    let binder = Binder(sysfsRoot: root)
    XCTAssertTrue(try binder.bindListed(BindConfig(addresses: [])).isEmpty)
    XCTAssertTrue(try binder.restoreListed(BindConfig(addresses: [])).isEmpty)
  }

  func testRestoreLeavesListedFunctionsNotOnVFIO() throws {
    try FileManager.default.createDirectory(atPath: "\(root)/bus/pci/devices/0000:00:07.0", withIntermediateDirectories: true)
    let r = try Binder(sysfsRoot: root).restoreListed(BindConfig(addresses: ["0000:00:07.0", "0000:00:09.0"]))
    XCTAssertEqual(r.map(\.0), ["0000:00:07.0", "0000:00:09.0"])
    XCTAssertEqual(r[0].1, .leftAlone("on no driver, not vfio-pci"))
    XCTAssertEqual(r[1].1, .leftAlone("no such PCI function"))
  }

  /// A file of the repository (the tests run from anywhere).
  func packageFile(_ path: String) -> String {
    var dir = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { dir.deleteLastPathComponent() }
    return dir.appendingPathComponent(path).path
  }
}
