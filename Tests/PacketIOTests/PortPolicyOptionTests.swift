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

  /// MRG_RXBUF where it is needed: with receive TSO, or buffers of a set size; always on request; never when turned off.
  func testMergeableReceiveBuffersOnlyWhereNeeded() throws {
    let base = [VirtioFeature.version1, NetFeature.mrgRxbuf, NetFeature.csum, NetFeature.guestCsum]
    let noTSO = FeatureSet(bits: base)
    let withTSO = FeatureSet(bits: base + [NetFeature.guestTSO4, NetFeature.guestTSO6])
    func accepted(_ o: PortOptions, _ offered: FeatureSet) throws -> FeatureSet {
      guard case .accepted(let f) = o.netFeaturePolicy().negotiate(offered: offered) else {
        XCTFail("negotiation failed")
        return .empty
      }
      return f
    }
    var o = PortOptions()
    XCTAssertNil(o.mergeableReceiveBuffers)
    // Default: frames fit one buffer, so no MRG_RXBUF without GUEST_TSO...
    XCTAssertFalse(try accepted(o, noTSO).contains(bit: NetFeature.mrgRxbuf))
    // ...and with it, both (64 KiB segments arrive as chains).
    let both = try accepted(o, withTSO)
    XCTAssertTrue(both.contains(bit: NetFeature.mrgRxbuf))
    XCTAssertTrue(both.contains(bit: NetFeature.guestTSO4))
    // No segmentation offload asked for: no GUEST_TSO, so no MRG_RXBUF either.
    o.segmentationOffload = false
    XCTAssertFalse(try accepted(o, withTSO).contains(bit: NetFeature.mrgRxbuf))
    // A buffer size set (possibly smaller than a frame): MRG_RXBUF whenever offered.
    o.bufferSize = 2048
    XCTAssertTrue(try accepted(o, noTSO).contains(bit: NetFeature.mrgRxbuf))
    // Asked for: whenever offered.
    o = PortOptions()
    o.mergeableReceiveBuffers = true
    XCTAssertTrue(try accepted(o, noTSO).contains(bit: NetFeature.mrgRxbuf))
    // Turned off: never, and GUEST_TSO goes with it (its dependency).
    o.mergeableReceiveBuffers = false
    let off = try accepted(o, withTSO)
    XCTAssertFalse(off.contains(bit: NetFeature.mrgRxbuf))
    XCTAssertFalse(off.contains(bit: NetFeature.guestTSO4))
  }

  func testQueuePolicyDefaultsToTheStandardOne() {
    XCTAssertEqual(PortOptions().queuePolicy, .standard)
    var o = PortOptions()
    o.queuePolicy = NetQueuePolicy(rxRefillThreshold: 64, txReclaimBelow: 16, txKickBatch: 8)
    XCTAssertEqual(o.queuePolicy.summary, "rx-refill=64 tx-reclaim-below=16 tx-kick-batch=8")
  }
}
