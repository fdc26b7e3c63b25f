import VirtioSpec

/// What a driver needs and would like from a device (§2.2, §3.1.1 step 4).
public struct FeaturePolicy: Sendable, Equatable {
  /// Without any one of these the driver cannot work: negotiation fails and says which.
  public var required: FeatureSet
  /// Used when offered.
  public var wanted: FeatureSet
  /// A wanted feature accepted only with another (§2.2.1: the driver must
  /// not accept a feature whose prerequisite it did not accept).
  public var dependencies: [FeatureDependency] = []

  public init(required: FeatureSet, wanted: FeatureSet = .empty, dependencies: [FeatureDependency] = []) {
    self.required = required
    self.wanted = wanted
    self.dependencies = dependencies
  }
}

/// `feature` is accepted only when at least one of `requiresAny` is.
public struct FeatureDependency: Sendable, Equatable {
  public var feature: Int
  public var requiresAny: FeatureSet

  public init(_ feature: Int, requiresAny bits: [Int]) {
    self.feature = feature
    self.requiresAny = FeatureSet(bits: bits)
  }
}

/// Outcome of negotiation: the accepted set, or exactly which required bits are missing.
public enum NegotiationOutcome: Sendable, Equatable {
  case accepted(FeatureSet)
  case missingRequired(missing: FeatureSet, offered: FeatureSet)
}

extension FeaturePolicy {
  /// accepted = offered ∩ (required ∪ wanted), less every wanted feature
  /// whose dependency is not accepted; fails if required ⊄ offered.
  public func negotiate(offered: FeatureSet) -> NegotiationOutcome {
    let missing = required.subtracting(offered)
    guard missing.isEmpty else { return .missingRequired(missing: missing, offered: offered) }
    var accepted = offered.intersection(required.union(wanted))
    // Dropping one feature may orphan another (ECN after TSO after CSUM): until nothing changes.
    var changed = true
    while changed {
      changed = false
      for d in dependencies where accepted.contains(bit: d.feature) && !required.contains(bit: d.feature)
        && accepted.intersection(d.requiresAny).isEmpty {
        accepted.remove(FeatureSet(bit: d.feature))
        changed = true
      }
    }
    return .accepted(accepted)
  }
}
