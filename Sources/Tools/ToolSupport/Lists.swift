import ArgumentParser

/// List syntax of the tools' command lines: Linux's cpulist format
/// (`0-3,8,10-11`, as in /sys and taskset -c) for CPUs and integer lists,
/// and hex strings for keys. A malformed list is a `ValidationError` (exit 64)
/// naming the option.
public enum Lists {
  /// `text` as integers in the order given, ranges `a-b` (a <= b) expanded;
  /// nil when malformed, a value is outside `range`, or a value repeats.
  public static func integers(_ text: String, in range: ClosedRange<Int>, maxCount: Int = 65536) -> [Int]? {
    var out: [Int] = []
    for part in text.split(separator: ",", omittingEmptySubsequences: false) {
      let ends = part.split(separator: "-", omittingEmptySubsequences: false)
      guard ends.count == 1 || ends.count == 2, ends.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
        let lo = Int(ends[0]), let hi = Int(ends[ends.count - 1]), lo <= hi, range.contains(lo), range.contains(hi),
        out.count + (hi - lo) < maxCount
      else { return nil }
      out += lo...hi
    }
    return out
  }

  /// A list that may repeat entries (an RSS indirection table): `0,1,1,0` or `0-3,0-3`.
  public static func table(_ text: String, option: String, in range: ClosedRange<Int>) throws -> [Int] {
    guard let v = integers(text, in: range) else {
      throw ValidationError("\(option) \(text): give integers \(range.lowerBound) ... \(range.upperBound) separated by commas, ranges as a-b (e.g. 0,1,0,1 or 0-3)")
    }
    return v
  }

  /// A cpulist without repeats: `1,2` or `0-3`.
  public static func cpus(_ text: String, option: String) throws -> [Int] {
    guard let v = integers(text, in: 0...65535), !v.isEmpty else {
      throw ValidationError("\(option) \(text): give CPU numbers separated by commas, ranges as a-b (e.g. 1,2 or 0-3)")
    }
    var seen = Set<Int>()
    for c in v where !seen.insert(c).inserted {
      throw ValidationError("\(option) \(text): CPU \(c) is listed twice; one worker per CPU")
    }
    return v
  }

  /// `6d5a56da...` (optionally with `:` between bytes) as bytes.
  public static func hex(_ text: String, option: String) throws -> [UInt8] {
    let digits = Array(text.filter { $0 != ":" })
    guard !digits.isEmpty, digits.count % 2 == 0 else {
      throw ValidationError("\(option) \(text): give an even number of hex digits (e.g. 6d5a56da255b0ec2...)")
    }
    var out: [UInt8] = []
    var i = 0
    while i < digits.count {
      guard let b = UInt8(String(digits[i...i + 1]), radix: 16) else {
        throw ValidationError("\(option) \(text): \(digits[i])\(digits[i + 1]) is not a hex byte")
      }
      out.append(b)
      i += 2
    }
    return out
  }
}
