/// A set of virtio feature bits. The spec lets a device offer more than 64
/// (virtio 1.2 §2.2: `device_feature_select` picks 32-bit words without an upper
/// bound; Linux already uses bits 65–68 for virtio-net), so the set holds 128.
public struct FeatureSet: Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
  /// Bits 0–63.
  public var low: UInt64
  /// Bits 64–127.
  public var high: UInt64

  /// Number of bits a `FeatureSet` can hold.
  public static let capacity = 128
  /// Number of 32-bit words a transport reads or writes (feature select 0…3).
  public static let wordCount = 4

  @inlinable public init(low: UInt64 = 0, high: UInt64 = 0) {
    self.low = low
    self.high = high
  }

  /// The set holding exactly `bit` (0..<128).
  @inlinable public init(bit: Int) {
    precondition(bit >= 0 && bit < Self.capacity, "feature bit \(bit) out of range")
    self = bit < 64 ? FeatureSet(low: 1 << UInt64(bit)) : FeatureSet(high: 1 << UInt64(bit - 64))
  }

  @inlinable public init(bits: [Int]) {
    self.init()
    for b in bits { self.formUnion(FeatureSet(bit: b)) }
  }

  public static let empty = FeatureSet()

  @inlinable public func contains(bit: Int) -> Bool { !intersection(FeatureSet(bit: bit)).isEmpty }
  @inlinable public func contains(_ other: FeatureSet) -> Bool { intersection(other) == other }
  @inlinable public var isEmpty: Bool { low == 0 && high == 0 }
  @inlinable public func union(_ o: FeatureSet) -> FeatureSet { FeatureSet(low: low | o.low, high: high | o.high) }
  @inlinable public func intersection(_ o: FeatureSet) -> FeatureSet { FeatureSet(low: low & o.low, high: high & o.high) }
  @inlinable public func subtracting(_ o: FeatureSet) -> FeatureSet { FeatureSet(low: low & ~o.low, high: high & ~o.high) }
  @inlinable public mutating func formUnion(_ o: FeatureSet) { self = union(o) }
  @inlinable public mutating func remove(_ o: FeatureSet) { self = subtracting(o) }

  /// 32-bit word `index` (0…3), as written to `device_feature` / `driver_feature`.
  @inlinable public func word(_ index: Int) -> UInt32 {
    precondition(index >= 0 && index < Self.wordCount)
    let v = index < 2 ? low : high
    return UInt32(truncatingIfNeeded: (index & 1) == 0 ? v : v >> 32)
  }

  @inlinable public mutating func setWord(_ index: Int, _ value: UInt32) {
    precondition(index >= 0 && index < Self.wordCount)
    let shift: UInt64 = (index & 1) == 0 ? 0 : 32
    let mask: UInt64 = 0xFFFF_FFFF << shift
    if index < 2 {
      low = (low & ~mask) | (UInt64(value) << shift)
    } else {
      high = (high & ~mask) | (UInt64(value) << shift)
    }
  }

  /// The bit numbers in the set, ascending.
  public var bitNumbers: [Int] { (0..<Self.capacity).filter { contains(bit: $0) } }

  public var description: String {
    "[" + bitNumbers.map { FeatureNames.name(of: $0, device: nil) }.joined(separator: ", ") + "]"
  }

  /// The names of the bits, interpreting device-specific bits (0–23, 41–127) for `device`.
  public func names(device: DeviceType?) -> [String] {
    bitNumbers.map { FeatureNames.name(of: $0, device: device) }
  }
}
