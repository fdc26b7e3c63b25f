import PacketIO
import PacketRelay
import VirtioNetSim
import VirtioSim
import VirtioSpec
import Glibc
import XCTest

/// The example app against a simulated virtio-net device: what goes in comes
/// back out, addresses swapped, nothing lost or reordered.
final class RelayTests: XCTestCase {
  func testReflectsEveryFrameWithAddressesSwapped() throws {
    for packed in [false, true] {
      let wire = NetWire(pairs: 1, controlQueue: true)
      var features = FeatureSet(bits: [NetFeature.mac, NetFeature.status, NetFeature.ctrlVQ, NetFeature.ctrlRx])
      if packed { features.formUnion(FeatureSet(bit: VirtioFeature.ringPacked)) }
      let t = try SimSessionTransport(
        deviceType: .net, features: features, queueSizes: [64, 64, 64], config: NetSimConfig.bytes(), behaviour: wire.behaviour)
      wire.attach(t.device)
      var options = PortOptions()
      options.rxDescriptors = 64
      options.txDescriptors = 64
      var relay = Relay(group: try PortGroup.open(transport: t, options: options))
      let frames = (0..<200).map { i -> [UInt8] in
        [0x02, 0, 0, 0, 0, 0xAA] + [0x02, 0, 0, 0, 0, 0xBB] + [0x88, 0xB5] + (0..<(46 + i % 50)).map { UInt8(truncatingIfNeeded: i &+ $0) }
      }
      wire.send(frames)
      let deadline = Date().addingTimeInterval(20)
      let stats = try relay.run(until: { c in c.received >= frames.count || Date() > deadline })
      let layout = packed ? "packed" : "split"
      XCTAssertEqual(relay.counts.received, 200, layout)
      XCTAssertEqual(relay.counts.sent + relay.counts.dropped, 200, layout)
      XCTAssertEqual(stats[0].rxPackets, 200, layout)
      XCTAssertEqual(stats[0].txPackets, UInt64(relay.counts.sent), layout)
      XCTAssertEqual(stats[0].txDropped, UInt64(relay.counts.dropped), layout)
      // Every frame sent back is its received frame with the addresses swapped, in order (drops leave gaps only).
      let expected = frames.map { f in Array(f[6..<12]) + Array(f[0..<6]) + Array(f[12...]) }
      let tail = Date().addingTimeInterval(10)
      while wire.transmitted().count < relay.counts.sent && Date() < tail { sched_yield() }
      let out = wire.transmitted()
      XCTAssertEqual(out.count, relay.counts.sent, layout)
      var next = 0
      for f in out {
        guard let i = expected[next...].firstIndex(of: f) else { return XCTFail("\(layout): a frame that was never received, or out of order") }
        next = i + 1
      }
    }
  }

  func testBadPortIsAUsageError() {
    do {
      _ = try Relay(ports: ["not a port"])
      XCTFail("opened a port named 'not a port'")
    } catch {
      XCTAssertEqual(error.code, .invalidArgument)
      XCTAssertFalse(error.message.isEmpty)
    }
  }
}
