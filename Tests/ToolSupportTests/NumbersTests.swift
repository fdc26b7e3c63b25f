import ArgumentParser
import ToolSupport
import XCTest

/// The tools' number parsing: units, overflow, NaN/infinity, ranges — a refusal, never a trap.
final class NumbersTests: XCTestCase {
  func testSizes() {
    let good: [(String, UInt64)] = [
      ("4096", 4096), ("4k", 4096), ("4KiB", 4096), ("1m", 1 << 20), ("2G", 2 << 30), ("1t", 1 << 40),
      ("512b", 512), ("16383p", 16383 << 50), ("18446744073709551615", UInt64.max),
    ]
    for (text, bytes) in good { XCTAssertEqual(Numbers.size(text), bytes, text) }
    for bad in ["", "k", "-1", "+4", "1.5k", "nan", "inf", "-inf", "1e400", "18446744073709551616", "16384p", "17179869184g", "4x", "٣", "4 k", " 4"] {
      XCTAssertNil(Numbers.size(bad), bad)
    }
  }

  func testDurations() {
    let good: [(String, UInt64)] = [
      ("10", 10_000_000_000), ("0.5", 500_000_000), ("500ms", 500_000_000), ("2m", 120_000_000_000),
      ("1h", 3_600_000_000_000), ("1d", 86_400_000_000_000), ("250us", 250_000), ("7ns", 7),
      ("1.25s", 1_250_000_000), ("0.000000001", 1), ("0.1234567891234567891234", 123_456_789), ("0", 0),
    ]
    for (text, nanoseconds) in good { XCTAssertEqual(Numbers.duration(text), nanoseconds, text) }
    for bad in ["", "s", ".5", "5.", "-1", "nan", "inf", "-inf", "infinity", "1e400", "1e3", "18446744073709551616",
      "18446744074", "213504d", "5x", "1..2", "0x10", "١"] {
      XCTAssertNil(Numbers.duration(bad), bad)
    }
  }

  func testRefusalsNameTheOptionAndTheRange() {
    XCTAssertThrowsError(try Numbers.size("inf", option: "--bs", in: 512...(64 << 20))) { e in
      let m = (e as! ValidationError).message
      XCTAssertTrue(m.contains("--bs=inf") && m.contains("512 to 64m"), m)
    }
    XCTAssertThrowsError(try Numbers.size("1g", option: "--bs", in: 512...(64 << 20))) { e in
      XCTAssertTrue((e as! ValidationError).message.contains("out of range"))
    }
    XCTAssertThrowsError(try Numbers.size("1000", option: "--bs", in: 512...(64 << 20), multipleOf: 512))
    XCTAssertThrowsError(try Numbers.duration("99999d", option: "--runtime", in: 1...(365 * 86_400_000_000_000))) { e in
      let m = (e as! ValidationError).message
      XCTAssertTrue(m.contains("--runtime=99999d") && m.contains("365d"), m)
    }
    XCTAssertThrowsError(try Numbers.duration("", option: "--runtime", in: 1...1_000_000_000)) { e in
      XCTAssertTrue((e as! ValidationError).message.contains("--runtime=''"))
    }
    XCTAssertEqual(try Numbers.duration("0", option: "--stats-period", in: 0...1_000_000_000), 0)
  }

  func testOffsetArithmetic() {
    XCTAssertEqual(Numbers.offset(1, plus: 2, times: 3), 7)
    XCTAssertNil(Numbers.offset(1, plus: UInt64.max, times: 2))
    XCTAssertNil(Numbers.offset(UInt64.max, plus: 1, times: 1))
  }

  func testRandomTextNeverTraps() {
    // Seeded: the same strings every run.
    var rng = SplitMix(seed: 0x13)
    let alphabet = Array("0123456789.kKmMgGtTpPiIbBsnuhd-+e xn∞")
    for _ in 0..<20_000 {
      let n = Int(rng.next() % 24)
      let s = String((0..<n).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] })
      _ = Numbers.size(s)
      _ = Numbers.duration(s)
    }
  }
}

struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
