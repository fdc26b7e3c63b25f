import VirtioCore
import VirtioNet
import VirtioSpec
import XCTest

@testable import PacketIO

/// Issue 17's port options: EVENT_IDX left out on request, the queue policy carried as given.
final class PortPolicyOptionTests: XCTestCase {
  func testEventIndexIsWantedUnlessTurnedOff() {
    var o = PortOptions()
    XCTAssertTrue(o.netFeaturePolicy().wanted.contains(bit: VirtioFeature.eventIdx))
    o.eventIndex = false
    let p = o.netFeaturePolicy()
    XCTAssertFalse(p.wanted.contains(bit: VirtioFeature.eventIdx))
    XCTAssertFalse(p.required.contains(bit: VirtioFeature.eventIdx))
    // Negotiated against a device offering it: not accepted.
    let offered = FeatureSet(bits: [VirtioFeature.version1, VirtioFeature.eventIdx, VirtioFeature.accessPlatform])
    XCTAssertFalse(offered.intersection(p.required.union(p.wanted)).contains(bit: VirtioFeature.eventIdx))
  }

  func testQueuePolicyDefaultsToTheStandardOne() {
    XCTAssertEqual(PortOptions().queuePolicy, .standard)
    var o = PortOptions()
    o.queuePolicy = NetQueuePolicy(rxRefillThreshold: 64, txReclaimBelow: 16, txKickBatch: 8)
    XCTAssertEqual(o.queuePolicy.summary, "rx-refill=64 tx-reclaim-below=16 tx-kick-batch=8")
  }
}
