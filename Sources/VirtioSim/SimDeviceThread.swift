import VirtioCore
import VirtioSpec

/// A simulated device's thread for a driver-side rig: made over the rig's
/// registers and memory, started here, stopped when this goes — whatever the
/// test did. Declare it before the rig's memory so the device stops first.
public struct SimDeviceThread: ~Copyable {
  public let device: SimDevice

  /// `configure` runs before the thread starts (fault injection, completion order).
  public init(
    transport: SimTransport, memory: SimIOMMU, behaviour: SimDevice.Behaviour = .echo, configure: (SimDevice) -> Void = { _ in }
  ) {
    device = SimDevice(transport: transport, memory: memory, behaviour: behaviour)
    configure(device)
    device.start()
  }

  deinit { device.stop() }
}

extension FeatureSet {
  /// `bits` as a simulated device offers them to a driver of `layout`: with
  /// RING_PACKED for a packed driver (§2.8), so the device speaks its ring.
  public static func offered(_ bits: [Int], for layout: RingLayout) -> FeatureSet {
    var f = FeatureSet(bits: bits)
    if layout == .packed { f.formUnion(FeatureSet(bit: VirtioFeature.ringPacked)) }
    return f
  }
}
