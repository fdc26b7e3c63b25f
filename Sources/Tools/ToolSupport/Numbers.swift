import ArgumentParser

/// The number syntax of the tools' command lines, checked without a trap:
/// every product and sum is overflow-checked, NaN and infinity are refused,
/// and a refusal is a `ValidationError` (exit 64) that names the option and
/// says what it takes.
///
/// - sizes: ASCII digits with an optional k/m/g/t/p suffix in base 1024
///   (fio's default kb_base), `i` and `b` optional: `4096`, `4k`, `4KiB`, `1m`, `2G`;
/// - durations: ASCII digits with an optional fraction and an optional unit
///   ns/us/ms/s/m/h/d (seconds when none): `10`, `0.5`, `500ms`, `2m`, `1h`.
public enum Numbers {
  /// `text` as bytes; nil when malformed or beyond `UInt64.max`.
  public static func size(_ text: String) -> UInt64? {
    var s = Substring(text)
    if let last = s.last, last == "B" || last == "b" { s = s.dropLast() }
    if let last = s.last, last == "i" || last == "I" { s = s.dropLast() }
    var shift: UInt64 = 0
    if let last = s.last, !isDigit(last) {
      switch last {
      case "k", "K": shift = 10
      case "m", "M": shift = 20
      case "g", "G": shift = 30
      case "t", "T": shift = 40
      case "p", "P": shift = 50
      default: return nil
      }
      s = s.dropLast()
    }
    guard !s.isEmpty, s.allSatisfy(isDigit), let n = UInt64(s) else { return nil }
    let (v, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
    return overflow ? nil : v
  }

  /// Units of a duration, longest suffix first (so `ms` is not read as `m`).
  static let durationUnits: [(suffix: String, nanoseconds: UInt64)] = [
    ("ns", 1), ("us", 1000), ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
  ]

  /// `text` as nanoseconds (plain numbers are seconds); nil when malformed or
  /// beyond `UInt64.max` nanoseconds. `nan`, `inf`, exponents and signs are malformed.
  public static func duration(_ text: String) -> UInt64? {
    var number = Substring(text)
    var scale: UInt64 = 1_000_000_000
    for (suffix, ns) in durationUnits where text.hasSuffix(suffix) {
      number = number.dropLast(suffix.count)
      scale = ns
      break
    }
    let parts = number.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
    guard let wholeText = parts.first, !wholeText.isEmpty, wholeText.allSatisfy(isDigit), let whole = UInt64(wholeText) else { return nil }
    let (wholeNs, o1) = whole.multipliedReportingOverflow(by: scale)
    guard !o1 else { return nil }
    guard parts.count == 2 else { return wholeNs }
    let frac = parts[1]
    guard !frac.isEmpty, frac.allSatisfy(isDigit) else { return nil }
    // The fraction's share of one unit: F × scale / 10^k for the first k ≤ 18
    // digits F, in 128 bits; the quotient is below `scale`, so it fits.
    let digits = frac.prefix(18)
    var f: UInt64 = 0
    var pow10: UInt64 = 1
    for c in digits {
      f = f * 10 + UInt64(c.asciiValue! - 48)
      pow10 *= 10
    }
    let wide = scale.multipliedFullWidth(by: f)
    let fracNs = pow10.dividingFullWidth((high: wide.high, low: wide.low)).quotient
    let (total, o2) = wholeNs.addingReportingOverflow(fracNs)
    return o2 ? nil : total
  }

  /// `text` as a size within `range`, or a refusal naming `option`.
  public static func size(
    _ text: String, option: String, in range: ClosedRange<UInt64>, multipleOf unit: UInt64 = 1
  ) throws(ValidationError) -> UInt64 {
    guard let v = size(text) else {
      throw ValidationError(
        "\(option)=\(shown(text)): not a size; give a whole number of bytes with an optional k, m, g or t suffix (4096, 4k, 1m, 2g)\(sizeHint(range))")
    }
    guard range.contains(v) else { throw ValidationError("\(option)=\(shown(text)): \(v) bytes is out of range\(sizeHint(range))") }
    guard v % unit == 0 else { throw ValidationError("\(option)=\(shown(text)): want a multiple of \(unit) bytes\(sizeHint(range))") }
    return v
  }

  /// `text` as nanoseconds within `range`, or a refusal naming `option`.
  public static func duration(_ text: String, option: String, in range: ClosedRange<UInt64>) throws(ValidationError) -> UInt64 {
    guard let v = duration(text) else {
      throw ValidationError(
        "\(option)=\(shown(text)): not a duration; give seconds (10, 0.5) or a number with a unit ns, us, ms, s, m, h or d (500ms, 2m, 1h)\(durationHint(range))")
    }
    guard range.contains(v) else { throw ValidationError("\(option)=\(shown(text)): out of range\(durationHint(range))") }
    return v
  }

  /// An integer option already parsed by ArgumentParser, checked against `range`.
  public static func check(_ value: Int, option: String, in range: ClosedRange<Int>, what: String = "") throws(ValidationError) {
    guard range.contains(value) else {
      throw ValidationError("\(option)=\(value): want \(range.lowerBound) to \(range.upperBound)\(what.isEmpty ? "" : " \(what)")")
    }
  }

  /// `a + b × c` without overflow; nil when it does not fit a UInt64.
  public static func offset(_ a: UInt64, plus b: UInt64, times c: UInt64) -> UInt64? {
    let (p, o1) = b.multipliedReportingOverflow(by: c)
    let (s, o2) = a.addingReportingOverflow(p)
    return o1 || o2 ? nil : s
  }

  /// Human form of a byte count for messages: `64m`, `4k`, `512`.
  public static func sizeText(_ v: UInt64) -> String {
    for (shift, suffix) in [(40, "t"), (30, "g"), (20, "m"), (10, "k")] where v != 0 && v % (1 << UInt64(shift)) == 0 {
      return "\(v >> UInt64(shift))\(suffix)"
    }
    return "\(v)"
  }

  /// Human form of nanoseconds for messages: `365d`, `1s`, `500ms`.
  public static func durationText(_ ns: UInt64) -> String {
    for (suffix, scale) in durationUnits.reversed() where ns != 0 && ns % scale == 0 { return "\(ns / scale)\(suffix)" }
    return "\(ns)ns"
  }

  static func sizeHint(_ r: ClosedRange<UInt64>) -> String {
    r == 0...UInt64.max ? "" : " (allowed: \(sizeText(r.lowerBound)) to \(sizeText(r.upperBound)))"
  }

  static func durationHint(_ r: ClosedRange<UInt64>) -> String {
    " (allowed: \(r.lowerBound == 0 ? "0" : durationText(r.lowerBound)) to \(durationText(r.upperBound)))"
  }

  /// The value as typed, quoted when empty, shortened when long.
  static func shown(_ text: String) -> String {
    if text.isEmpty { return "''" }
    return text.count > 40 ? String(text.prefix(40)) + "…" : text
  }

  static func isDigit(_ c: Character) -> Bool { c.isASCII && c.isNumber }
}
