import Glibc
import PacketIO
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// RSS with hash report and MAC/VLAN filters through PacketIO's public API
/// against the simulated device: the control commands it receives, the
/// 20-byte header in both directions, and the checks made before any device
/// is touched.
final class SimSteeringTests: XCTestCase {
  typealias Rig = SimPortTests.Rig

  /// Ethernet + IPv4 (no options) + UDP from 10.0.0.`src`:`sport` to 10.0.1.1:`dport`.
  static func udp(src: UInt8, sport: UInt16, dport: UInt16, length: Int = 80) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: length)
    for i in 0..<6 { f[i] = 0xFF }
    f[12] = 0x08
    f[14] = 0x45
    f[23] = 17
    f.replaceSubrange(26..<30, with: [10, 0, 0, src])
    f.replaceSubrange(30..<34, with: [10, 0, 1, 1])
    f.replaceSubrange(34..<38, with: [UInt8(sport >> 8), UInt8(sport & 0xFF), UInt8(dport >> 8), UInt8(dport & 0xFF)])
    return f
  }

  func testRSSConfigAndHashReport() throws {
    for packed in [false, true] {
      let table = [1, 0, 1, 1]
      let rig = try Rig(
        packed: packed, pairs: 2, queues: 2, extra: [NetFeature.rss, NetFeature.hashReport], hashReport: true,
        options: { $0.rss = RSSConfig(hashTypes: NetHashType.udpv4, indirectionTable: table) })
      let commands = rig.wire.control!.commands
      let rss = commands.filter { $0.cls == NetCtrl.classMQ && $0.command == NetCtrl.mqRSSConfig }
      XCTAssertEqual(rss.count, 1, "\(commands)")
      XCTAssertFalse(commands.contains { $0.command == NetCtrl.mqVQPairsSet && $0.cls == NetCtrl.classMQ }, "RSS_CONFIG sets the pairs itself")
      XCTAssertEqual(Array(rss[0].data.prefix(16)), [4, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0], "hash types, mask, unclassified, table")
      XCTAssertTrue(rig.group.ports[0].detail.contains("HASH_REPORT"), rig.group.ports[0].detail)

      var q = rig.group.takeQueue(port: 0, queue: 0)
      var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
      q.start(pool: &pool)
      let frames = (0..<8).map { Self.udp(src: UInt8(1 + $0), sport: UInt16(1000 + $0), dport: 9) }
      rig.wire.send(frames)
      var got: [[UInt8]] = []
      var hashes: [ReceivedHash?] = []
      var burst = [PacketBuffer](repeating: PacketBuffer(index: 0, offset: 0, length: 0), count: 32)
      let deadline = Date().addingTimeInterval(10)
      while got.count < frames.count && Date() < deadline {
        let n = burst.withUnsafeMutableBufferPointer { b in
          var span = b.mutableSpan
          return q.receive(into: &span, pool: &pool)
        }
        for i in 0..<n {
          got.append(Array(pool.data(burst[i])))
          hashes.append(pool.receiveHash(burst[i]))
          pool.release(burst[i])
        }
        if n == 0 { sched_yield() }
      }
      XCTAssertEqual(got, frames, "the 20-byte header is stripped exactly (\(packed ? "packed" : "split"))")
      for (f, h) in zip(frames, hashes) {
        let predicted = Toeplitz.hash(key: Toeplitz.defaultKey, input: Array(f[26..<38]))
        XCTAssertEqual(h, ReceivedHash(value: predicted, report: NetHashReport.udpv4))
      }

      // Transmit: the device strips a 20-byte header too and sees the frame as sent.
      var p = pool.allocate()!
      let f = Self.udp(src: 99, sport: 5, dport: 6)
      p.length = UInt16(f.count)
      pool.data(p).copyBytes(from: f)
      XCTAssertNil(pool.receiveHash(p), "a buffer not received carries no hash")
      let taken = [p].withUnsafeBufferPointer { q.transmit($0.span, pool: &pool) }
      XCTAssertEqual(taken, 1)
      while rig.wire.transmitted().isEmpty && Date() < deadline { q.flush(pool: &pool) }
      XCTAssertEqual(rig.wire.transmitted(), [f])

      // A new table at run time is one more RSS_CONFIG.
      try rig.group.setRSS(port: 0, RSSConfig(hashTypes: NetHashType.udpv4, indirectionTable: [0, 0]))
      XCTAssertThrowsError(try rig.group.setRSS(port: 0, RSSConfig(indirectionTable: [0, 2]))) { e in
        XCTAssertEqual((e as! VirtioError).code, .invalidArgument)
      }
      let after = rig.wire.control!.commands.filter { $0.command == NetCtrl.mqRSSConfig && $0.cls == NetCtrl.classMQ }
      XCTAssertEqual(after.count, 2)
      XCTAssertEqual(Array(after[1].data[4..<12]), [1, 0, 0, 0, 0, 0, 0, 0])
    }
  }

  func testFiltersAppliedWithPromiscuousOff() throws {
    let unicast = MACAddress((0x02, 0, 0, 0, 0, 0x22))
    let multicast = MACAddress((0x01, 0, 0x5e, 0, 0, 0x01))
    let own = MACAddress((0x02, 0, 0, 0, 0, 0x11))
    let rig = try Rig(
      packed: false, extra: [NetFeature.ctrlVLAN, NetFeature.ctrlMACAddr],
      options: {
        $0.promiscuous = false
        $0.macAddress = own
        $0.macFilter = [unicast, multicast]
        $0.vlanFilter = [5, 300]
      })
    // The port reports (and would announce) the MAC it set, not the device's first one.
    XCTAssertEqual(rig.group.ports[0].mac, own)
    try rig.group.setVLAN(port: 0, 5, enabled: false)
    try rig.group.setMACFilter(port: 0, [])
    XCTAssertEqual(
      rig.wire.control!.commands,
      [
        ControlCommand(cls: NetCtrl.classRx, command: NetCtrl.rxPromisc, data: [0]),
        ControlCommand(cls: NetCtrl.classMAC, command: NetCtrl.macAddrSet, data: own.byteArray),
        ControlCommand(cls: NetCtrl.classMAC, command: NetCtrl.macTableSet, data: [1, 0, 0, 0] + unicast.byteArray + [1, 0, 0, 0] + multicast.byteArray),
        ControlCommand(cls: NetCtrl.classVLAN, command: NetCtrl.vlanAdd, data: [5, 0]),
        ControlCommand(cls: NetCtrl.classVLAN, command: NetCtrl.vlanAdd, data: [44, 1]),
        ControlCommand(cls: NetCtrl.classVLAN, command: NetCtrl.vlanDel, data: [5, 0]),
        ControlCommand(cls: NetCtrl.classMAC, command: NetCtrl.macTableSet, data: [0, 0, 0, 0, 0, 0, 0, 0]),
      ])
  }

  func testBadFilterSettingsAreRefused() throws {
    // Filters with promiscuous mode on: refused before any device is opened.
    XCTAssertThrowsError(try Rig(packed: false, options: { $0.macFilter = [] })) { e in
      let err = e as! VirtioError
      XCTAssertEqual(err.code, .invalidArgument)
      XCTAssertTrue(err.message.contains("--no-promisc"), err.message)
    }
    XCTAssertThrowsError(try Rig(packed: false, options: { $0.promiscuous = false; $0.vlanFilter = [4096] })) { e in
      XCTAssertTrue((e as! VirtioError).message.contains("4095"), (e as! VirtioError).message)
    }
    // A device without CTRL_VLAN / RSS: the open says which feature is missing.
    XCTAssertThrowsError(try Rig(packed: false, options: { $0.promiscuous = false; $0.vlanFilter = [1] })) { e in
      XCTAssertTrue((e as! VirtioError).message.contains("CTRL_VLAN"), (e as! VirtioError).message)
    }
    XCTAssertThrowsError(try Rig(packed: false, options: { $0.rss = RSSConfig() })) { e in
      XCTAssertTrue((e as! VirtioError).message.contains("RSS"), (e as! VirtioError).message)
    }
    // Kernel interfaces cannot take them.
    var o = PortOptions()
    o.rss = RSSConfig()
    XCTAssertThrowsError(try { _ = try PortGroup.open([.interface("lo")], options: o) }()) { e in
      XCTAssertTrue((e as! VirtioError).message.contains("kernel interface"), (e as! VirtioError).message)
    }
  }
}
