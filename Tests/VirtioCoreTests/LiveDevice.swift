import Glibc
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// A queue on a simulated device running on its own thread, set up through
/// the full §3.1.1 sequence over `SimTransport`. Stops the device thread when
/// it goes out of scope, whatever the test did.
struct Live<Q: TestableQueue & ~Copyable>: ~Copyable {
  let thread: SimDeviceThread
  var device: SimDevice { thread.device }
  var dma: SimDMA
  var q: Q
  var t: SimTransport
  let buffers: DMARegion
  let negotiated: FeatureSet
  var publishes = 0

  init(
    size: Int, features extra: [Int] = [], behaviour: SimDevice.Behaviour = .echo, maxIndirect: Int = 0,
    configure: (SimDevice) -> Void = { _ in }
  ) throws {
    let offered = FeatureSet.offered([VirtioFeature.version1] + extra, for: Q.layout)
    var t = SimTransport(deviceType: .net, deviceFeatures: offered, queueSizes: [size])
    let accepted = try DeviceInit.begin(&t, policy: FeaturePolicy(required: offered))
    var dma = try SimDMA()
    let q = try Q(index: 0, size: size, features: RingFeatures(negotiated: accepted), memory: &dma, maxIndirect: maxIndirect)
    try t.enableQueue(0, q, msixVector: 0)
    try DeviceInit.finish(&t)
    self.buffers = try dma.allocate(byteCount: 1 << 20, alignment: 4096)
    self.thread = SimDeviceThread(transport: t, memory: dma.iommu, behaviour: behaviour, configure: configure)
    self.negotiated = accepted
    self.dma = dma
    self.q = q
    self.t = t
  }

  func iova(_ slot: Int, _ slotBytes: Int = 256) -> UInt64 { buffers.iova + UInt64(slot * slotBytes % buffers.byteCount) }
  func pointer(_ slot: Int, _ slotBytes: Int = 256) -> UnsafeMutableRawPointer {
    buffers.pointer + slot * slotBytes % buffers.byteCount
  }

  /// publish(), and ring the doorbell when the device asked for it.
  mutating func kick() {
    publishes += 1
    if q.publish() { t.notify(queue: 0, value: q.notificationValue) }
  }

  /// The next non-empty poll result, or nil when `seconds` pass with nothing.
  mutating func waitUsed(timeout seconds: Double = deadlineSeconds) -> PollResult? {
    let deadline = simNowNanos() &+ UInt64(seconds * 1e9)
    var spins = 0
    while true {
      let r = q.nextUsed()
      if r != .empty { return r }
      if simNowNanos() >= deadline { return nil }
      spins += 1
      if spins & 63 == 0 { usleep(50) } else { sched_yield() }
    }
  }
}
