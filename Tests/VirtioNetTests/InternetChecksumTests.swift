import VirtioNet
import XCTest

/// `InternetChecksum.sum` (eight bytes at a time) against RFC 1071's plain
/// definition, two bytes at a time, over every length and alignment that
/// changes its path, with initial values up to 2^32 − 1.
final class InternetChecksumTests: XCTestCase {
  func reference(_ bytes: [UInt8], initial: UInt32) -> UInt16 {
    var acc = UInt64(initial)
    var i = 0
    while i + 1 < bytes.count {
      acc += UInt64(bytes[i]) << 8 | UInt64(bytes[i + 1])
      i += 2
    }
    if i < bytes.count { acc += UInt64(bytes[i]) << 8 }
    while acc >> 16 != 0 { acc = (acc & 0xFFFF) + (acc >> 16) }
    return UInt16(acc)
  }

  func testSumMatchesTheTwoByteDefinition() {
    var rng = SystemRandomNumberGenerator()
    let initials: [UInt32] = [0, 1, 0xFFFF, 0x1_0000, 0xFFFF_FFFF]
    for length in Array(0...70) + [1499, 1500, 9001] {
      for offset in 0..<4 {
        // All 0xFF (every word carries), all zero (0, never 0xFFFF), and random bytes.
        for fill in 0..<3 {
          let bytes = (0..<(length + offset)).map { _ in fill == 0 ? 0xFF : fill == 1 ? 0 : UInt8.random(in: 0...255, using: &rng) }
          let part = Array(bytes[offset...])
          for initial in initials {
            let got = bytes.withUnsafeBytes { InternetChecksum.sum($0.baseAddress! + offset, length, initial: initial) }
            XCTAssertEqual(got, reference(part, initial: initial), "length \(length) at offset \(offset), fill \(fill), initial \(initial)")
          }
        }
      }
    }
  }
}
