@testable import DeviceBinding
import Foundation
import XCTest

/// In-use detection and bind refusals on a fake /proc and /sys tree.
final class UsageTests: XCTestCase {
  var root = ""

  override func setUpWithError() throws {
    root = NSTemporaryDirectory() + "vio-bind-\(UUID().uuidString)"
    try make("proc/self/mountinfo", """
      22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
      23 22 0:5 / /dev rw - devtmpfs devtmpfs rw
      """)
    try make("proc/swaps", "Filename Type Size Used Priority\n/dev/vdb2 partition 1024 0 -2\n")
    try make("proc/net/route", """
      Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT
      eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
      eth1\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
      """)
    try make("proc/net/ipv6_route", "")
    try make("sys/class/block/vda/dev", "254:0\n")
    try make("sys/class/block/vda/vda1/dev", "254:1\n")
    try make("sys/class/block/vda1/dev", "254:1\n")
    try make("sys/class/block/vdb/dev", "254:16\n")
    try make("sys/class/block/vdb/vdb2/dev", "254:18\n")
    try make("sys/class/block/vdc/dev", "254:32\n")
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

  func make(_ path: String, _ text: String) throws {
    let full = root + "/" + path
    try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try text.write(toFile: full, atomically: true, encoding: .utf8)
  }

  var view: SystemView { SystemView(procRoot: root + "/proc", sysRoot: root + "/sys", devRoot: root + "/dev") }

  /// A process holding the group's node — /dev/vfio/N, or /dev/vfio/noiommu-N
  /// in VFIO's no-IOMMU mode — has the function in use.
  func testOpenVFIOGroupNodeIsInUse() throws {
    for node in ["vfio/7", "vfio/noiommu-7"] {
      try? FileManager.default.removeItem(atPath: root + "/proc/4242")
      try make("proc/4242/comm", "vio-fwd\n")
      try FileManager.default.createDirectory(atPath: root + "/proc/4242/fd", withIntermediateDirectories: true)
      try FileManager.default.createSymbolicLink(atPath: root + "/proc/4242/fd/5", withDestinationPath: root + "/dev/" + node)
      let u = view.usage(netInterfaces: [], blockDevices: [], vfioGroup: 7)
      XCTAssertEqual(u.openBy, ["pid 4242 (vio-fwd) has \(root)/dev/\(node) open"], node)
      XCTAssertFalse(view.usage(netInterfaces: [], blockDevices: [], vfioGroup: 8).inUse, node)
    }
  }

  func testMountedPartitionMakesDiskBusy() {
    let u = view.usage(netInterfaces: [], blockDevices: ["vda"], vfioGroup: nil)
    XCTAssertTrue(u.inUse)
    XCTAssertEqual(u.mounts, ["/dev/vda1 on / (ext4)"])
  }

  func testSwapPartitionMakesDiskBusy() {
    let u = view.usage(netInterfaces: [], blockDevices: ["vdb"], vfioGroup: nil)
    XCTAssertEqual(u.swap, ["/dev/vdb2"])
    XCTAssertTrue(u.inUse)
  }

  func testIdleDiskIsFree() {
    XCTAssertFalse(view.usage(netInterfaces: [], blockDevices: ["vdc"], vfioGroup: nil).inUse)
  }

  func testDefaultRouteInterfaceIsBusy() {
    let u = view.usage(netInterfaces: ["eth0"], blockDevices: [], vfioGroup: nil)
    XCTAssertTrue(u.carriesDefaultRoute)
    let other = view.usage(netInterfaces: ["eth1"], blockDevices: [], vfioGroup: nil)
    XCTAssertFalse(other.carriesDefaultRoute)
    XCTAssertEqual(other.routes, ["route 10.0.2.0/24 on eth1"])
  }

  func device(_ address: String, usage: DeviceUsage = DeviceUsage(), group: Int? = 3, peers: [PCIDeviceInfo.GroupPeer] = [], vendor: UInt16 = 0x1AF4) -> PCIDeviceInfo {
    PCIDeviceInfo(
      address: address, vendorID: vendor, deviceID: 0x1042, vendorName: "Red Hat, Inc.", deviceName: "Virtio block device",
      className: "SCSI storage controller", driver: "virtio-pci", iommuGroup: group, groupPeers: peers, netInterfaces: [],
      blockDevices: ["vda"], usage: usage)
  }

  func testBindRefusesMountedDeviceUnlessForced() {
    var u = DeviceUsage()
    u.mounts = ["/dev/vda1 on / (ext4)"]
    let inv = [device("0000:00:03.0", usage: u)]
    let refusals = Binder().preflight(["0000:00:03.0"], inventory: inv)
    XCTAssertEqual(refusals.count, 1)
    XCTAssertTrue(refusals[0].message.contains("mounted: /dev/vda1 on /"), refusals[0].message)
    XCTAssertTrue(refusals[0].message.contains("--force"))
    XCTAssertTrue(Binder(force: true).preflight(["0000:00:03.0"], inventory: inv).isEmpty)
  }

  func testBindRefusesWithoutIOMMUEvenForced() {
    let inv = [device("0000:00:03.0", group: nil)]
    let r = Binder(force: true).preflight(["0000:00:03.0"], inventory: inv)
    XCTAssertEqual(r.count, 1)
    XCTAssertTrue(r[0].message.contains("IOMMU"))
  }

  func testBindRefusesSharedGroupUnlessPeerComes() {
    let peer = PCIDeviceInfo.GroupPeer(address: "0000:00:04.0", driver: "e1000")
    let inv = [device("0000:00:03.0", peers: [peer])]
    let r = Binder().preflight(["0000:00:03.0"], inventory: inv)
    XCTAssertEqual(r.count, 1)
    XCTAssertTrue(r[0].message.contains("0000:00:04.0 (bound to e1000)"), r[0].message)
    XCTAssertTrue(Binder().preflight(["0000:00:03.0", "0000:00:04.0"], inventory: inv + [device("0000:00:04.0")]).isEmpty)
  }

  func testBindRefusesNonVirtioAndUnknown() {
    let inv = [device("0000:00:05.0", vendor: 0x8086)]
    XCTAssertTrue(Binder().preflight(["0000:00:05.0"], inventory: inv)[0].message.contains("not a virtio device"))
    XCTAssertTrue(Binder().preflight(["0000:00:09.0"], inventory: inv)[0].message.contains("no such PCI function"))
  }
}

/// `vio-bind bind --no-iommu`: uio_pci_generic, only without an IOMMU, the same in-use checks.
final class NoIOMMUBindTests: XCTestCase {
  func device(_ address: String, inUse: Bool = false, group: Int? = nil) -> PCIDeviceInfo {
    var u = DeviceUsage()
    if inUse { u.mounts = ["/dev/vda1 on / (ext4)"] }
    return PCIDeviceInfo(
      address: address, vendorID: 0x1AF4, deviceID: 0x1042, vendorName: "Red Hat, Inc.", deviceName: "Virtio block device",
      className: "SCSI storage controller", driver: "virtio-pci", iommuGroup: group, groupPeers: [], netInterfaces: [],
      blockDevices: ["vda"], usage: u)
  }

  /// A throw-away sysfs root with what `NoIOMMUDriver` reads: vfio's
  /// parameter (`nil`: vfio without no-IOMMU support) and vfio-pci loaded or not.
  func fakeSysfs(parameter: String?, vfioPCI: Bool) -> String {
    let root = NSTemporaryDirectory() + "vio-noiommu-\(UUID().uuidString)"
    let fm = FileManager.default
    try? fm.createDirectory(atPath: root + "/module/vfio/parameters", withIntermediateDirectories: true)
    if vfioPCI { try? fm.createDirectory(atPath: root + "/bus/pci/drivers/vfio-pci", withIntermediateDirectories: true) }
    if let parameter { fm.createFile(atPath: root + "/" + NoIOMMUDriver.vfioParameter, contents: Data((parameter + "\n").utf8)) }
    addTeardownBlock { try? fm.removeItem(atPath: root) }
    return root
  }

  func testTargetsUIOWithoutVFIONoIOMMUMode() {
    let root = fakeSysfs(parameter: nil, vfioPCI: true)
    XCTAssertEqual(Binder(sysfsRoot: root, noIOMMU: true).targetDriver, "uio_pci_generic")
    XCTAssertTrue(Binder(sysfsRoot: root, noIOMMU: true).noIOMMUDriver.reason.contains("CONFIG_VFIO_NOIOMMU"))
    XCTAssertEqual(Binder(sysfsRoot: root).targetDriver, "vfio-pci")
    // vfio has the mode but vfio-pci is not loaded: uio, saying how to get it.
    let noDriver = NoIOMMUDriver.choose(sysfsRoot: fakeSysfs(parameter: "N", vfioPCI: false))
    XCTAssertEqual(noDriver.driver, "uio_pci_generic")
    XCTAssertTrue(noDriver.reason.contains("modprobe vfio-pci"), noDriver.reason)
  }

  /// vfio with no-IOMMU support: vfio-pci, switching the mode on when it is off (and only then).
  func testTargetsVFIONoIOMMUModeWhenVFIOHasIt() throws {
    let on = NoIOMMUDriver.choose(sysfsRoot: fakeSysfs(parameter: "Y", vfioPCI: true))
    XCTAssertEqual(on.driver, "vfio-pci")
    XCTAssertFalse(on.enablesNoIOMMUMode)
    let root = fakeSysfs(parameter: "N", vfioPCI: true)
    let off = Binder(sysfsRoot: root, noIOMMU: true).noIOMMUDriver
    XCTAssertEqual(off.driver, "vfio-pci")
    XCTAssertTrue(off.enablesNoIOMMUMode)
    XCTAssertTrue(off.reason.contains("enable_unsafe_noiommu_mode=1"), off.reason)
    try off.enable(sysfsRoot: root)
    // sysfs takes the write whole; the fake file keeps what followed the first byte.
    XCTAssertEqual(try String(contentsOfFile: root + "/" + NoIOMMUDriver.vfioParameter, encoding: .utf8).prefix(1), "1")
  }

  func testTargetsUIOWithoutAnIOMMU() {
    XCTAssertEqual(Binder().targetDriver, "vfio-pci")
    XCTAssertTrue(Binder(noIOMMU: true).preflight(["0000:00:03.0"], inventory: [device("0000:00:03.0")]).isEmpty)
  }

  func testRefusesInUseUnlessForced() {
    let inv = [device("0000:00:03.0", inUse: true)]
    let r = Binder(noIOMMU: true).preflight(["0000:00:03.0"], inventory: inv)
    XCTAssertEqual(r.count, 1)
    XCTAssertTrue(r[0].message.contains("--force"), r[0].message)
    XCTAssertTrue(Binder(force: true, noIOMMU: true).preflight(["0000:00:03.0"], inventory: inv).isEmpty)
  }

  func testRefusesAFunctionAnIOMMUCovers() {
    let r = Binder(force: true, noIOMMU: true).preflight(["0000:00:03.0"], inventory: [device("0000:00:03.0", group: 3)])
    XCTAssertEqual(r.count, 1)
    XCTAssertTrue(r[0].message.contains("IOMMU group 3") && r[0].message.contains("vfio-pci"), r[0].message)
  }

  func testVFIORefusalNamesTheOptIn() {
    let r = Binder(force: true).preflight(["0000:00:03.0"], inventory: [device("0000:00:03.0")])
    XCTAssertEqual(r.count, 1)
    XCTAssertTrue(r[0].message.contains("--no-iommu") && r[0].message.contains("--allow-no-iommu"), r[0].message)
  }
}
