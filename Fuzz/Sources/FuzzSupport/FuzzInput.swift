/// The fuzzer's input read front to back as a little program. Past the end
/// every read returns 0, so any byte string is a complete, valid program and
/// libFuzzer's mutations never have to respect a framing.
public struct FuzzInput {
  @usableFromInline let base: UnsafePointer<UInt8>?
  public let count: Int
  public private(set) var position = 0

  /// `data` is libFuzzer's buffer, valid for the duration of one call only.
  public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
    base = data
    count = data == nil ? 0 : size
  }

  public var isEmpty: Bool { position >= count }
  public var remaining: Int { max(0, count - position) }

  public mutating func u8() -> UInt8 {
    guard position < count, let base else { return 0 }
    // SAFETY: position < count, the size libFuzzer gave for `base`.
    defer { position += 1 }
    return base[position]
  }
  public mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
  public mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
  public mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
  public mutating func bool() -> Bool { u8() & 1 != 0 }

  /// Up to `n` bytes (fewer at the end of the input).
  public mutating func bytes(_ n: Int) -> [UInt8] {
    let k = min(max(n, 0), remaining)
    var out = [UInt8]()
    out.reserveCapacity(k)
    for _ in 0..<k { out.append(u8()) }
    return out
  }

  /// Everything not read yet.
  public mutating func rest() -> [UInt8] { bytes(remaining) }
}

/// An invariant of the code under test; a violation is a finding, so it
/// traps and libFuzzer saves the input that caused it.
public func require(
  _ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line
) {
  if !condition { fatalError("fuzz invariant violated: \(message())", file: file, line: line) }
}
