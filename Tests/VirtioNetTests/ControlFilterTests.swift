import VirtioCore
import VirtioNet
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// RSS, MAC and VLAN commands (§5.1.6.5.2, §5.1.6.5.3, §5.1.6.5.7) as the
/// simulated device receives them, byte for byte, and the checks that keep a
/// bad setting from reaching the device.
final class ControlFilterTests: XCTestCase {
  static let all = [NetFeature.ctrlVQ, NetFeature.ctrlRx, NetFeature.mq, NetFeature.rss, NetFeature.hashReport, NetFeature.ctrlVLAN, NetFeature.ctrlMACAddr]

  func testRSSConfigLayout() throws {
    try rss(SplitVirtqueue.self)
    try rss(PackedVirtqueue.self)
  }

  func rss<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type) throws {
    var r = try ControlRig<Q>(offer: Self.all)
    XCTAssertEqual(r.config.rssMaxKeySize, 40)
    XCTAssertEqual(r.config.rssMaxIndirectionTableLength, 128)
    let key: [UInt8] = [1, 2, 3, 4, 5]
    try r.ctrl.setRSS(
      RSSConfig(hashTypes: NetHashType.udpv4 | NetHashType.ipv4, key: key, indirectionTable: [1, 0, 1, 1], unclassifiedQueue: 1),
      config: r.config, pairs: 2)
    // hash_types, mask 3, unclassified 1, table [1,0,1,1], max_tx_vq 2, key length 5, key.
    var expected: [UInt8] = [0x05, 0, 0, 0, 3, 0, 1, 0]
    expected += [1, 0, 0, 0, 1, 0, 1, 0]
    expected += [2, 0, 5]
    expected += key
    XCTAssertEqual(r.responder.commands, [ControlCommand(cls: NetCtrl.classMQ, command: NetCtrl.mqRSSConfig, data: expected)], "\(Q.layout)")
  }

  func testRSSDefaultsSpreadOverThePairs() throws {
    var r = try ControlRig<SplitVirtqueue>(offer: Self.all)
    try r.ctrl.setRSS(RSSConfig(), config: r.config, pairs: 3)
    let d = try XCTUnwrap(r.responder.commands.first?.data)
    let types = d[0..<4].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    XCTAssertEqual(types, r.config.supportedHashTypes, "every supported type")
    XCTAssertEqual(le16(d, 4), 127, "the longest table the device takes")
    let table = (0..<128).map { le16(d, 8 + 2 * $0) }
    XCTAssertEqual(table, (0..<128).map { $0 % 3 })
    XCTAssertEqual(Array(d[(8 + 256 + 3)...]), Toeplitz.defaultKey)
  }

  func le16(_ d: [UInt8], _ at: Int) -> Int { Int(d[at]) | Int(d[at + 1]) << 8 }

  func testBadRSSSettingsNeverReachTheDevice() throws {
    var r = try ControlRig<SplitVirtqueue>(offer: Self.all)
    let bad: [(RSSConfig, String)] = [
      (RSSConfig(indirectionTable: [0, 1, 0]), "power of two"),
      (RSSConfig(indirectionTable: Array(repeating: 0, count: 256)), "power of two from 1 to 128"),
      (RSSConfig(indirectionTable: [0, 2]), "entry 2"),
      (RSSConfig(key: Array(repeating: 7, count: 41)), "rss_max_key_size"),
      (RSSConfig(key: []), "1 ... 40"),
      (RSSConfig(hashTypes: NetHashType.tcpEx), "tcp6ex"),
      (RSSConfig(unclassifiedQueue: 2), "unclassified"),
    ]
    for (c, words) in bad {
      XCTAssertThrowsError(try r.ctrl.setRSS(c, config: r.config, pairs: 2)) { e in
        let err = e as! VirtioError
        XCTAssertEqual(err.code, .invalidArgument, err.message)
        XCTAssertTrue(err.message.contains(words), "\(words): \(err.message)")
      }
    }
    XCTAssertEqual(r.responder.commands, [])
  }

  func testFiltersLayout() throws {
    var r = try ControlRig<PackedVirtqueue>(offer: Self.all)
    let own = MACAddress((0x02, 0, 0, 0, 0, 0x10))
    let uni = MACAddress((0x02, 0, 0, 0, 0, 0x20))
    let multi = MACAddress((0x01, 0x00, 0x5e, 0, 0, 1))
    try r.ctrl.setMACAddress(own)
    try r.ctrl.setMACTable(unicast: [uni], multicast: [multi])
    try r.ctrl.setVLAN(100, enabled: true)
    try r.ctrl.setVLAN(4095, enabled: false)
    try r.ctrl.setMACTable(unicast: [], multicast: [])
    try r.ctrl.setHashReport(hashTypes: NetHashType.ipv4, key: [9])
    XCTAssertEqual(
      r.responder.commands,
      [
        ControlCommand(cls: NetCtrl.classMAC, command: NetCtrl.macAddrSet, data: [2, 0, 0, 0, 0, 0x10]),
        ControlCommand(cls: NetCtrl.classMAC, command: NetCtrl.macTableSet, data: [1, 0, 0, 0, 2, 0, 0, 0, 0, 0x20, 1, 0, 0, 0, 1, 0, 0x5e, 0, 0, 1]),
        ControlCommand(cls: NetCtrl.classVLAN, command: NetCtrl.vlanAdd, data: [100, 0]),
        ControlCommand(cls: NetCtrl.classVLAN, command: NetCtrl.vlanDel, data: [0xFF, 0x0F]),
        ControlCommand(cls: NetCtrl.classMAC, command: NetCtrl.macTableSet, data: [0, 0, 0, 0, 0, 0, 0, 0]),
        ControlCommand(cls: NetCtrl.classMQ, command: NetCtrl.mqHashConfig, data: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 9]),
      ])
    XCTAssertThrowsError(try r.ctrl.setVLAN(4096, enabled: true))
    XCTAssertThrowsError(try r.ctrl.setMACTable(unicast: [multi], multicast: []))
    XCTAssertThrowsError(try r.ctrl.setMACTable(unicast: [], multicast: [uni]))
    XCTAssertEqual(r.responder.commands.count, 6, "refused before the device")
  }

  func testEachCommandNamesTheMissingFeature() throws {
    var r = try ControlRig<SplitVirtqueue>(offer: [NetFeature.ctrlVQ], maxPairs: 1)
    func expectMissing(_ name: String, _ call: () throws -> Void) {
      XCTAssertThrowsError(try call()) { e in
        let err = e as! VirtioError
        XCTAssertEqual(err.code, .missingFeatures)
        XCTAssertTrue(err.message.contains(name), "\(name): \(err.message)")
      }
    }
    let config = r.config
    expectMissing("RSS") { try r.ctrl.setRSS(RSSConfig(), config: config, pairs: 1) }
    expectMissing("HASH_REPORT") { try r.ctrl.setHashReport(hashTypes: 1, key: []) }
    expectMissing("CTRL_MAC_ADDR") { try r.ctrl.setMACAddress(MACAddress((2, 0, 0, 0, 0, 1))) }
    expectMissing("CTRL_RX") { try r.ctrl.setMACTable(unicast: [], multicast: []) }
    expectMissing("CTRL_VLAN") { try r.ctrl.setVLAN(1, enabled: true) }
    XCTAssertEqual(r.responder.commands, [])
  }

  func testMACParsing() {
    XCTAssertEqual(MACAddress(parsing: "52:54:00:ab:CD:ef")?.description, "52:54:00:ab:cd:ef")
    XCTAssertEqual(MACAddress(parsing: "02-00-00-00-00-01")?.description, "02:00:00:00:00:01")
    for bad in ["", "52:54:00:ab:cd", "52:54:00:ab:cd:ef:00", "5:54:00:ab:cd:ef", "zz:54:00:ab:cd:ef", "52:54:00:ab:cd:"] {
      XCTAssertNil(MACAddress(parsing: bad), bad)
    }
  }

  func testHashTypeNames() {
    XCTAssertEqual(NetHashTypeNames.parse("ipv4,udp4"), NetHashType.ipv4 | NetHashType.udpv4)
    XCTAssertNil(NetHashTypeNames.parse("ipv5"))
    XCTAssertNil(NetHashTypeNames.parse(""))
    XCTAssertEqual(NetHashTypeNames.describe(NetHashType.tcpv6 | NetHashType.ipv4), "ipv4,tcp6")
  }

  /// The software hash predicts the queue: RSSConfig.queue picks table[hash & (n - 1)].
  func testQueuePrediction() {
    let h = Toeplitz.hash(key: Toeplitz.defaultKey, input: Toeplitz.ipv4Input(source: [66, 9, 149, 187], destination: [161, 142, 100, 80]))
    XCTAssertEqual(h, 0x323e_8fc2)
    XCTAssertEqual(RSSConfig.queue(hash: h, table: [0, 1, 2, 3]), 2)
    XCTAssertEqual(RSSConfig.queue(hash: h, table: [5, 6, 7, 8, 9, 10, 11, 12]), 7)
  }
}
