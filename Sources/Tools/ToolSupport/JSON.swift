/// A small JSON writer (no Foundation): keys, scalars, nesting, commas.
public struct JSON {
  public private(set) var text = ""
  var needComma = [false]
  var afterKey = false

  public init() {}

  mutating func separator() {
    if afterKey {
      afterKey = false
      return
    }
    if needComma[needComma.count - 1] { text += ", " }
    needComma[needComma.count - 1] = true
  }

  public mutating func key(_ k: String) {
    separator()
    text += JSON.quote(k) + ": "
    afterKey = true
  }

  public mutating func open(_ bracket: String) {
    separator()
    text += bracket
    needComma.append(false)
  }

  public mutating func close(_ bracket: String) {
    needComma.removeLast()
    text += bracket
  }

  public mutating func string(_ s: String) {
    separator()
    text += JSON.quote(s)
  }

  public mutating func int(_ v: Int) {
    separator()
    text += String(v)
  }

  public mutating func bool(_ v: Bool) {
    separator()
    text += v ? "true" : "false"
  }

  public mutating func uint(_ v: UInt64) {
    separator()
    text += String(v)
  }

  /// A value already in JSON form (a number formatted by the caller).
  public mutating func raw(_ v: String) {
    separator()
    text += v
  }

  /// `s` as a JSON string: quotes, backslashes and control characters escaped.
  public static func quote(_ s: String) -> String {
    var o = "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": o += "\\\""
      case "\\": o += "\\\\"
      case "\n": o += "\\n"
      case "\t": o += "\\t"
      default:
        if u.value < 0x20 {
          let h = String(u.value, radix: 16)
          o += "\\u" + String(repeating: "0", count: 4 - h.count) + h
        } else {
          o.unicodeScalars.append(u)
        }
      }
    }
    return o + "\""
  }
}
