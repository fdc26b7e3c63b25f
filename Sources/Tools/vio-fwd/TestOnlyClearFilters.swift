import PacketIO

/// TEST ONLY (--test-only-clear-filters-after N, issue 15's guest filter
/// test): once port 0 has received N frames, every port's receive filters are
/// cleared at run time through the public setters — promiscuous on
/// (§5.1.6.5.1), MAC table emptied (§5.1.6.5.2), the VLANs removed
/// (§5.1.6.5.3) — so frames the device dropped before reach the port again.
/// The line it prints is what the test waits for. Main thread, once.
struct TestOnlyClearFilters {
  let after: Int?
  let vlans: [UInt16]
  var done = false

  init(after: Int?, vlans: [UInt16]) {
    self.after = after
    self.vlans = vlans
  }

  mutating func poll(_ group: inout PortGroup) {
    guard let after, !done, group.count > 0, group.stats(port: 0).rxPackets >= UInt64(after) else { return }
    done = true
    for p in 0..<group.count {
      do throws(VirtioError) {
        try group.setPromiscuous(port: p, true)
        try group.setMACFilter(port: p, [])
        for vid in vlans { try group.setVLAN(port: p, vid, enabled: false) }
      } catch {
        Console.error("test only: port \(p): clearing the receive filters failed: \(error.message)")
        return
      }
    }
    let removed = vlans.isEmpty ? "none" : vlans.map(String.init).joined(separator: ",")
    Console.note(
      "test only: receive filters cleared on \(group.count) port(s) after \(after) frames received on port 0 (promiscuous on, MAC table emptied, VLANs removed: \(removed))"
    )
  }
}
