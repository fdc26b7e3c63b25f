import VirtioSpec
import XCTest

/// The software Toeplitz hash against the published RSS verification suite
/// (Microsoft's "Verifying the RSS Hash Calculation"; the same vectors are in
/// the Intel 82599 datasheet §7.1.2.8.3 and DPDK's test_thash.c): with the
/// suite's 40-byte key, each (source, destination) gives the IPv4-only and
/// the IPv4+TCP hash.
final class ToeplitzTests: XCTestCase {
  struct Vector {
    var source: [UInt8]
    var sourcePort: UInt16
    var destination: [UInt8]
    var destinationPort: UInt16
    var ipv4: UInt32
    var tcpv4: UInt32
  }

  static let ipv4Vectors = [
    Vector(source: [66, 9, 149, 187], sourcePort: 2794, destination: [161, 142, 100, 80], destinationPort: 1766, ipv4: 0x323e_8fc2, tcpv4: 0x51cc_c178),
    Vector(source: [199, 92, 111, 2], sourcePort: 14230, destination: [65, 69, 140, 83], destinationPort: 4739, ipv4: 0xd718_262a, tcpv4: 0xc626_b0ea),
    Vector(source: [24, 19, 198, 95], sourcePort: 12898, destination: [12, 22, 207, 184], destinationPort: 38024, ipv4: 0xd2d0_a5de, tcpv4: 0x5c2b_394a),
    Vector(source: [38, 27, 205, 30], sourcePort: 48228, destination: [209, 142, 163, 6], destinationPort: 2217, ipv4: 0x8298_9176, tcpv4: 0xafc7_327f),
    Vector(source: [153, 39, 163, 191], sourcePort: 44251, destination: [202, 188, 127, 2], destinationPort: 1303, ipv4: 0x5d18_09c5, tcpv4: 0x10e8_28a2),
  ]

  func testIPv4VerificationSuite() {
    for v in Self.ipv4Vectors {
      let l3 = Toeplitz.ipv4Input(source: v.source, destination: v.destination)
      let l4 = Toeplitz.ipv4Input(source: v.source, destination: v.destination, ports: (v.sourcePort, v.destinationPort))
      XCTAssertEqual(Toeplitz.hash(key: Toeplitz.defaultKey, input: l3), v.ipv4, "\(v.source) -> \(v.destination)")
      XCTAssertEqual(Toeplitz.hash(key: Toeplitz.defaultKey, input: l4), v.tcpv4, "\(v.source):\(v.sourcePort) -> \(v.destination):\(v.destinationPort)")
    }
  }

  /// The suite's first IPv6 vector: 3ffe:2501:200:1fff::7 port 2794 to 3ffe:2501:200:3::1 port 1766.
  func testIPv6VerificationSuite() {
    let source: [UInt8] = [0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x07]
    let destination: [UInt8] = [0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x01]
    XCTAssertEqual(Toeplitz.hash(key: Toeplitz.defaultKey, input: source + destination), 0x2cc1_8cd5)
    XCTAssertEqual(Toeplitz.hash(key: Toeplitz.defaultKey, input: source + destination + [0x0a, 0xea, 0x06, 0xe6]), 0x4020_7d3d)
  }

  /// Linearity over XOR, which any Toeplitz hash has: h(a ^ b) = h(a) ^ h(b); and nothing hashes to non-zero from zeros.
  func testLinear() {
    let a: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    let b: [UInt8] = [0xF0, 0x0F, 0xAA, 0x55, 0, 0xFF, 7, 6, 5, 4, 3, 2]
    let x = zip(a, b).map { $0 ^ $1 }
    let k = Toeplitz.defaultKey
    XCTAssertEqual(Toeplitz.hash(key: k, input: x), Toeplitz.hash(key: k, input: a) ^ Toeplitz.hash(key: k, input: b))
    XCTAssertEqual(Toeplitz.hash(key: k, input: [UInt8](repeating: 0, count: 12)), 0)
  }
}
