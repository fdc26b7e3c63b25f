import PacketIO

/// TEST ONLY (--test-only-needs-reset-after N, issue 18's guest test): once
/// a port has sent N frames, its transmit ring publishes an impossible avail
/// index (split rings) so the device itself sets DEVICE_NEEDS_RESET; the port
/// then recovers in-process like after any real fault. Main thread, once.
struct TestOnlyNeedsReset {
  let after: Int?
  var done = false

  init(after: Int?) { self.after = after }

  mutating func poll(_ group: inout PortGroup) {
    guard let after, !done else { return }
    for p in 0..<group.count where group.stats(port: p).txPackets >= UInt64(after) {
      done = true
      let ok = group.testOnlyProvokeNeedsReset(port: p)
      Console.note(
        ok
          ? "test only: port \(p) publishes an impossible avail index after \(after) frames sent (provoking DEVICE_NEEDS_RESET)"
          : "test only: could not provoke DEVICE_NEEDS_RESET on port \(p) (packed ring or kernel path)")
      return
    }
  }
}
