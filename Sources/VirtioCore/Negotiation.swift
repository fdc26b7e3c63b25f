import VirtioSpec

/// What a driver needs and would like from a device (§2.2, §3.1.1 step 4).
public struct FeaturePolicy: Sendable, Equatable {
  /// Without any one of these the driver cannot work: negotiation fails and says which.
  public var required: FeatureSet
  /// Used when offered.
  public var wanted: FeatureSet

  public init(required: FeatureSet, wanted: FeatureSet = .empty) {
    self.required = required
    self.wanted = wanted
  }
}

/// Outcome of negotiation: the accepted set, or exactly which required bits are missing.
public enum NegotiationOutcome: Sendable, Equatable {
  case accepted(FeatureSet)
  case missingRequired(missing: FeatureSet, offered: FeatureSet)
}

extension FeaturePolicy {
  /// accepted = offered ∩ (required ∪ wanted); fails if required ⊄ offered.
  public func negotiate(offered: FeatureSet) -> NegotiationOutcome {
    let missing = required.subtracting(offered)
    guard missing.isEmpty else { return .missingRequired(missing: missing, offered: offered) }
    return .accepted(offered.intersection(required.union(wanted)))
  }
}
