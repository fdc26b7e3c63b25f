import VirtioSpec

/// Device initialisation — virtio 1.2 §3.1.1 "Driver Requirements: Device
/// Initialization", written once for every transport.
///
/// `begin` runs steps 1–6 (reset … FEATURES_OK re-read); the driver then sets up
/// its queues (step 7) and calls `finish` (step 8, DRIVER_OK). On any error the
/// device is left with FAILED set (step "If any of these steps go irrecoverably
/// wrong, the driver SHOULD set the FAILED status bit").
public enum DeviceInit {
  public static func begin<T: Transport & ~Copyable>(
    _ transport: inout T, policy: FeaturePolicy
  ) throws(VirtioError) -> FeatureSet {
    // §3.1.1 step 1: reset the device.
    try transport.reset()
    // Step 2: ACKNOWLEDGE — we have noticed the device.
    var status: DeviceStatus = .acknowledge
    transport.writeStatus(status)
    // Step 3: DRIVER — we know how to drive it.
    status.insert(.driver)
    transport.writeStatus(status)
    // Step 4: read the device's features and write the subset we accept.
    let offered = transport.readDeviceFeatures()
    let accepted: FeatureSet
    switch policy.negotiate(offered: offered) {
    case .accepted(let set):
      accepted = set
    case .missingRequired(let missing, _):
      fail(&transport)
      let names = missing.names(device: transport.deviceType).joined(separator: ", ")
      throw VirtioError(
        .missingFeatures,
        "\(transport.deviceType) does not offer required feature(s) \(names) (offered: \(offered.names(device: transport.deviceType).joined(separator: ", "))); use the kernel driver for this device")
    }
    transport.writeDriverFeatures(accepted)
    // Step 5: FEATURES_OK; no feature bits may change after this.
    status.insert(.featuresOK)
    transport.writeStatus(status)
    // Step 6: re-read status; if FEATURES_OK did not stick the device refused the subset.
    let after = transport.readStatus()
    guard after.contains(.featuresOK) else {
      fail(&transport)
      throw VirtioError(
        .negotiationFailed,
        "\(transport.deviceType) refused the feature set \(accepted.names(device: transport.deviceType).joined(separator: ", ")) (FEATURES_OK did not stick, status \(after)); the device cannot be driven with these features")
    }
    return accepted
  }

  /// §3.1.1 step 8: DRIVER_OK — the driver is live. Checks that the device did
  /// not flag an error while the queues were set up.
  public static func finish<T: Transport & ~Copyable>(_ transport: inout T) throws(VirtioError) {
    let status = transport.readStatus()
    transport.writeStatus(status.union(.driverOK))
    let after = transport.readStatus()
    if after.contains(.deviceNeedsReset) || after.contains(.failed) || !after.contains(.driverOK) {
      fail(&transport)
      throw VirtioError(.deviceFailed, "\(transport.deviceType) did not accept DRIVER_OK (status \(after)); reset the device and try again")
    }
  }

  /// Sets FAILED (§3.1.1): the driver gave up on the device.
  public static func fail<T: Transport & ~Copyable>(_ transport: inout T) {
    transport.writeStatus(transport.readStatus().union(.failed))
  }
}
