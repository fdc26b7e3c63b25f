import VirtioSim
import VirtioSpec
import XCTest

/// FeatureSet: 128 bits, four 32-bit words (virtio 1.2 §2.2, §4.1.4.3 feature select).
final class FeatureSetTests: XCTestCase {
  func testBitsAcrossBothHalves() {
    for bit in [0, 1, 31, 32, 33, 63, 64, 65, 68, 96, 127] {
      let f = FeatureSet(bit: bit)
      XCTAssertTrue(f.contains(bit: bit), "bit \(bit)")
      XCTAssertEqual(f.bitNumbers, [bit])
      XCTAssertEqual(f.low != 0, bit < 64, "bit \(bit) lands in the wrong half")
      XCTAssertEqual(f.high != 0, bit >= 64, "bit \(bit) lands in the wrong half")
      for other in [0, 31, 32, 63, 64, 127] where other != bit {
        XCTAssertFalse(f.contains(bit: other), "bit \(bit) also claims \(other)")
      }
    }
    XCTAssertEqual(FeatureSet.capacity, 128)
    XCTAssertEqual(FeatureSet.wordCount, 4)
  }

  func testWordSplit() {
    // device_feature_select = n reads bits 32n ... 32n+31.
    for bit in [0, 5, 31, 32, 40, 63, 64, 65, 95, 96, 127] {
      let f = FeatureSet(bit: bit)
      for w in 0..<4 {
        XCTAssertEqual(f.word(w), w == bit / 32 ? UInt32(1) << UInt32(bit % 32) : 0, "bit \(bit), word \(w)")
      }
    }
    var g = FeatureSet()
    g.setWord(2, 0x0000_0002)  // bit 65
    g.setWord(3, 0x8000_0000)  // bit 127
    g.setWord(1, 0x0000_0001)  // bit 32
    XCTAssertEqual(g.bitNumbers, [32, 65, 127])
    g.setWord(1, 0)
    XCTAssertEqual(g.bitNumbers, [65, 127])
  }

  func testWordRoundTrip() {
    var rng = SplitMix64(seed: 42)
    for _ in 0..<1000 {
      let f = FeatureSet(low: rng.next(), high: rng.next())
      var g = FeatureSet()
      for w in 0..<FeatureSet.wordCount { g.setWord(w, f.word(w)) }
      XCTAssertEqual(f, g)
    }
  }

  func testSetAlgebra() {
    let a = FeatureSet(bits: [1, 32, 65])
    let b = FeatureSet(bits: [32, 65, 100])
    XCTAssertEqual(a.union(b).bitNumbers, [1, 32, 65, 100])
    XCTAssertEqual(a.intersection(b).bitNumbers, [32, 65])
    XCTAssertEqual(a.subtracting(b).bitNumbers, [1])
    XCTAssertTrue(a.union(b).contains(a))
    XCTAssertFalse(a.contains(b))
    XCTAssertTrue(FeatureSet.empty.isEmpty)
    var c = a
    c.remove(FeatureSet(bit: 65))
    c.formUnion(FeatureSet(bit: 127))
    XCTAssertEqual(c.bitNumbers, [1, 32, 127])
  }

  func testNames() {
    let f = FeatureSet(bits: [VirtioFeature.version1, VirtioFeature.ringPacked, NetFeature.guestUDPTunnelGSO])
    XCTAssertEqual(f.names(device: .net), ["VERSION_1", "RING_PACKED", "GUEST_UDP_TUNNEL_GSO"])
    XCTAssertEqual(f.description, "[VERSION_1, RING_PACKED, bit65]")
  }
}
