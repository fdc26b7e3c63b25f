import ToolSupport

/// fio's number syntax: sizes with k/m/g/t suffixes in base 1024 (fio's default
/// kb_base), times in seconds with optional s/ms/us/m/h.
enum Units {
  /// `4096`, `4k`, `4KiB`, `1m`, `2g` → bytes; nil when malformed or too large (ToolSupport's checked syntax).
  static func size(_ text: String) -> UInt64? { Numbers.size(text) }

  /// `10`, `0.5`, `10s`, `500ms`, `2m`, `1h` → nanoseconds; plain numbers are seconds (fio's --runtime).
  static func duration(_ text: String) -> UInt64? { Numbers.duration(text) }

  /// 4096 → "4096B"? No: fio style, `4KiB`, `1MiB`, `1.5GiB`.
  static func bytes(_ v: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var x = Double(v)
    var i = 0
    while x >= 1024 && i < units.count - 1 {
      x /= 1024
      i += 1
    }
    if i == 0 { return "\(v)B" }
    return x == x.rounded() ? "\(Int(x))\(units[i])" : "\(fixed(x, 2))\(units[i])"
  }

  /// Bandwidth in fio's form: `48.0MiB/s (50.3MB/s)`.
  static func bandwidth(_ bytesPerSecond: Double) -> String {
    "\(binary(bytesPerSecond))/s (\(decimal(bytesPerSecond))/s)"
  }

  static func binary(_ v: Double) -> String { scaled(v, by: 1024, ["B", "KiB", "MiB", "GiB"]) }
  static func decimal(_ v: Double) -> String { scaled(v, by: 1000, ["B", "kB", "MB", "GB"]) }

  /// `v` in the largest unit it reaches, 2 decimals below 10, else 1.
  static func scaled(_ v: Double, by step: Double, _ units: [String]) -> String {
    var x = v
    var i = 0
    while x >= step && i < units.count - 1 {
      x /= step
      i += 1
    }
    return "\(fixed(x, x < 10 ? 2 : 1))\(units[i])"
  }

  /// IOPS in fio's form: `987`, `12.3k`.
  static func count(_ v: Double) -> String {
    if v < 1000 { return "\(Int(v.rounded()))" }
    if v < 1_000_000 { return "\(fixed(v / 1000, 1))k" }
    return "\(fixed(v / 1_000_000, 2))M"
  }

  /// `x` with `digits` decimals (no Foundation).
  static func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "0" }
    // Beyond what an Int holds after scaling: Swift's own form, never a trap.
    guard abs(x) < 1e15 else { return "\(x)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = (abs(x) * scale).rounded()
    let whole = Int(n / scale)
    var frac = String(Int(n.truncatingRemainder(dividingBy: scale)))
    while frac.count < digits { frac = "0" + frac }
    return (x < 0 ? "-" : "") + (digits == 0 ? "\(whole)" : "\(whole).\(frac)")
  }

  static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

  /// `x` as a UInt64, clamped (NaN and negatives: 0), never a trap.
  static func clamped(_ x: Double) -> UInt64 {
    guard x.isFinite, x > 0 else { return x == .infinity ? UInt64.max : 0 }
    return x >= 18_446_744_073_709_549_568 ? UInt64.max : UInt64(x)
  }
}
