import Glibc
import PacketIO
import ToolSupport
import VirtioNet

/// Live lines, the stats file, and the final summary (text and JSON).
enum Report {
  static func fmt(_ x: Double, _ digits: Int) -> String {
    if digits == 0 { return x.isFinite && abs(x) < 9e18 ? String(Int(x.rounded())) : "0" }
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let v = (x * p).rounded() / p
    var s = String(v)
    if let dot = s.firstIndex(of: ".") {
      let decimals = s.distance(from: dot, to: s.endIndex) - 1
      if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
    } else if digits > 0 {
      s += "." + String(repeating: "0", count: digits)
    }
    return s
  }

  /// Frames vio-fwd took in and did not send on (tx ring full after retries,
  /// malformed) plus frames lost before it saw them (kernel RX ring full).
  static func drops(_ s: NetQueueStats) -> UInt64 { s.txDropped &+ s.rxErrors &+ s.rxDropped }

  /// Packets a port moved out (rxonly: in).
  static func moved(_ s: NetQueueStats, _ mode: Mode) -> UInt64 { mode == .rxonly ? s.rxPackets : s.txPackets }

  /// One line per period: per port RX/TX Mpps, TX Gbit/s (frame bytes), drops, link.
  /// With several queues, each port's received packets per queue so far (`rxq a/b`): where RSS put the flows.
  static func live(
    _ g: borrowing PortGroup, _ now: [NetQueueStats], _ before: [NetQueueStats], seconds: Double, elapsed: Double, queueRx: [[UInt64]] = []
  ) -> String {
    var parts: [String] = []
    let dt = max(seconds, 1e-9)
    for p in 0..<now.count {
      let rx = Double(now[p].rxPackets &- before[p].rxPackets) / dt / 1e6
      let tx = Double(now[p].txPackets &- before[p].txPackets) / dt / 1e6
      let gbit = Double(now[p].txBytes &- before[p].txBytes) * 8 / dt / 1e9
      // Offload use, once there is any: GSO packets in, to the device, cut in software (this period).
      let s = now[p], b = before[p]
      let gso = s.rxGSO | s.txGSO | s.txSegmented == 0 ? ""
        : " gso rx \(s.rxGSO &- b.rxGSO) tx \(s.txGSO &- b.txGSO) sw \(s.txSegmented &- b.txSegmented)"
      parts.append(
        "port\(p) rx \(fmt(rx, 4)) Mpps tx \(fmt(tx, 4)) Mpps \(fmt(gbit, 3)) Gbit/s drops \(drops(now[p])) link \(g.isRemoved(port: p) ? "removed" : g.isLinkUp(port: p) ? "up" : "down")\(gso)"
          + (p < queueRx.count && queueRx[p].count > 1 ? " rxq \(queueRx[p].map(String.init).joined(separator: "/"))" : ""))
    }
    return "\(fmt(elapsed, 1))s " + parts.joined(separator: " | ")
  }

  /// key=value lines, written to a temporary file and renamed over `path` (readers never see half a file).
  static func writeStatsFile(_ path: String, _ g: borrowing PortGroup, _ stats: [NetQueueStats], elapsed: Double) {
    var lines = ["elapsed=\(fmt(elapsed, 3))"]
    for (p, s) in stats.enumerated() {
      for (k, v) in fields(s) { lines.append("port\(p).\(k)=\(v)") }
      lines.append("port\(p).drops=\(drops(s))")
      lines.append("port\(p).link=\(g.isLinkUp(port: p) ? "up" : "down")")
      lines.append("port\(p).reconnects=\(g.reconnects(port: p))")
      lines.append("port\(p).removed=\(g.isRemoved(port: p) ? 1 : 0)")
    }
    let text = lines.joined(separator: "\n") + "\n"
    let tmp = path + ".tmp"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return }
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    rename(tmp, path)
  }

  static func fields(_ s: NetQueueStats) -> [(String, UInt64)] {
    [
      ("rx_packets", s.rxPackets), ("rx_bytes", s.rxBytes), ("tx_packets", s.txPackets), ("tx_bytes", s.txBytes),
      ("tx_dropped", s.txDropped), ("tx_ring_full", s.txRingFull), ("tx_stall_notifications", s.txStallNotifications), ("tx_errors", s.txErrors), ("rx_errors", s.rxErrors),
      ("rx_no_buffers", s.rxNoBuffers), ("rx_dropped", s.rxDropped), ("notifications", s.notifications),
      ("interrupts", s.interrupts), ("rx_chains", s.rxChains), ("tx_chains", s.txChains),
      ("rx_gso", s.rxGSO), ("tx_gso", s.txGSO), ("tx_segmented", s.txSegmented), ("tx_segments", s.txSegments),
    ]
  }

  struct Summary {
    var settings: Settings
    var elapsed: Double
    var ports: [PortInfo]
    var stats: [NetQueueStats]
    /// Per port, per queue.
    var queues: [[NetQueueStats]]
    var configInterrupts: [UInt64]
    var links: [Bool]
    var linkEvents: [Int]
    /// vhost-user: backend restarts reconnected, per port.
    var reconnects: [UInt64]
    /// Ports whose device was removed during the run (hot-unplug).
    var removed: [Bool]
    /// Gratuitous announcements sent per port (after a live migration, §5.1.6.5.4).
    var announcements: [UInt64]
    /// In-process recoveries from DEVICE_NEEDS_RESET, and ports whose device did not come back.
    var recoveries: [UInt64]
    var failed: [Bool]
    var events: [String]
    var cpuNanoseconds: UInt64
    var sleeps: UInt64
    /// Polling rounds of every worker (a pass over its ports), and those that
    /// moved a frame: how busy the workers were, and frames per busy round.
    var rounds: UInt64
    var busyRounds: UInt64
    /// Seconds during which packets moved, and the best rate over one sample.
    var activeSeconds: Double
    var peakPPS: Double
    /// Kernel-path ports: the interface's tx_dropped during the run (frames the
    /// kernel took and then dropped: counted sent by the socket, never delivered).
    var kernelTxDropped: [UInt64]

    /// Packets that left: TX of every port (rxonly: what was received).
    var forwarded: UInt64 {
      settings.mode == .rxonly ? stats.reduce(0) { $0 &+ $1.rxPackets } : stats.reduce(0) { $0 &+ $1.txPackets }
    }
    var dropped: UInt64 { stats.reduce(0) { $0 &+ Report.drops($1) } &+ kernelTxDropped.reduce(0, &+) }
    var cpuPerPacket: Double { forwarded == 0 ? 0 : Double(cpuNanoseconds) / Double(forwarded) }
    /// Packets out per second while traffic flowed.
    var ratePPS: Double { activeSeconds > 0 ? Double(forwarded) / activeSeconds : 0 }

    func text() -> [String] {
      var out = [
        "summary: \(Report.fmt(elapsed, 1)) s, mode \(settings.mode.rawValue), burst \(settings.burst), wait \(settings.wait.rawValue)"
      ]
      for (p, s) in stats.enumerated() {
        out.append(
          "  port \(p) \(ports[p].address) (\(ports[p].path)): rx \(s.rxPackets) pkts \(s.rxBytes) B, tx \(s.txPackets) pkts \(s.txBytes) B, "
            + "dropped \(s.txDropped) (tx ring full \(s.txRingFull)), rx errors \(s.rxErrors), rx no-buffer \(s.rxNoBuffers), rx dropped \(s.rxDropped), "
            + "chains rx \(s.rxChains) tx \(s.txChains), gso rx \(s.rxGSO) tx \(s.txGSO), segmented in software \(s.txSegmented) (\(s.txSegments) frames), notifications \(s.notifications), interrupts \(s.interrupts), config interrupts \(configInterrupts[p]), link \(links[p] ? "up" : "down") (\(linkEvents[p]) change(s))"
            + (ports[p].path == "vhost-user" ? ", reconnects \(reconnects[p])" : "")
            + (removed[p] ? ", REMOVED during the run" : "")
            + (recoveries[p] > 0 ? ", recovered from DEVICE_NEEDS_RESET \(recoveries[p]) time(s)" : "")
            + (failed[p] ? ", FAILED (the device did not come back after DEVICE_NEEDS_RESET)" : "")
            + (ports[p].path == "kernel" ? ", dropped by the interface after the hand-over \(kernelTxDropped[p])" : ""))
      }
      let mpps = Double(forwarded) / max(elapsed, 1e-9) / 1e6
      out.append(
        "  total: \(forwarded) pkts out, \(dropped) dropped, \(Report.fmt(mpps, 4)) Mpps average (\(Report.fmt(ratePPS / 1e6, 4)) Mpps over the \(Report.fmt(activeSeconds, 1)) s traffic flowed, peak \(Report.fmt(peakPPS / 1e6, 4))), worker CPU \(Report.fmt(Double(cpuNanoseconds) / 1e9, 3)) s = \(Report.fmt(cpuPerPacket, 0)) ns/pkt, \(sleeps) sleeps")
      let share = rounds == 0 ? 0 : Double(busyRounds) / Double(rounds) * 100
      let perRound = busyRounds == 0 ? 0 : Double(forwarded) / Double(busyRounds)
      out.append(
        "  polling: \(rounds) rounds, \(busyRounds) moved frames (\(Report.fmt(share, 1)) %), \(Report.fmt(perRound, 1)) frames out per such round")
      return out
    }

    func json() -> String {
      let q = JSON.quote
      var ps: [String] = []
      for (p, s) in stats.enumerated() {
        var kv = [
          "\"port\":\(q(ports[p].address.description))", "\"path\":\(q(ports[p].path))", "\"mtu\":\(ports[p].mtu)", "\"detail\":\(q(ports[p].detail))",
          "\"link_up\":\(links[p])", "\"link_events\":\(linkEvents[p])", "\"config_interrupts\":\(configInterrupts[p])",
          "\"reconnects\":\(reconnects[p])", "\"removed\":\(removed[p])", "\"announcements\":\(announcements[p])",
          "\"recoveries\":\(recoveries[p])", "\"failed\":\(failed[p])", "\"drops\":\(Report.drops(s) &+ kernelTxDropped[p])",
          "\"kernel_tx_dropped\":\(kernelTxDropped[p])",
        ]
        kv.append("\"offloads\":\(q(ports[p].offloads.description))")
        if let a = ports[p].dmaAddressing { kv.append("\"dma_addressing\":\(q(a.rawValue))") }
        if let f = ports[p].fallback {
          kv.append("\"fallback\":{\"interface\":\(q(f.kernelName)),\"because\":\(q(f.summary)),\"reason\":\(q(f.message))}")
        }
        for (k, v) in Report.fields(s) { kv.append("\"\(k)\":\(v)") }
        let qs = queues[p].map { q in
          "{\"rx_packets\":\(q.rxPackets),\"tx_packets\":\(q.txPackets),\"tx_dropped\":\(q.txDropped),\"interrupts\":\(q.interrupts),\"notifications\":\(q.notifications)}"
        }
        kv.append("\"queues\":[\(qs.joined(separator: ","))]")
        ps.append("{" + kv.joined(separator: ",") + "}")
      }
      return "{\"mode\":\(q(settings.mode.rawValue)),\"wait\":\(q(settings.wait.rawValue)),\"idle_pause\":\(settings.idlePauses),\"burst\":\(settings.burst),"
        + "\"elapsed_s\":\(Report.fmt(elapsed, 3)),\"forwarded\":\(forwarded),\"dropped\":\(dropped),"
        + "\"active_s\":\(Report.fmt(activeSeconds, 3)),\"rate_pps\":\(Report.fmt(ratePPS, 0)),\"peak_pps\":\(Report.fmt(peakPPS, 0)),"
        + "\"cpu_ns\":\(cpuNanoseconds),\"cpu_ns_per_packet\":\(Report.fmt(cpuPerPacket, 1)),\"sleeps\":\(sleeps),"
        + "\"rounds\":\(rounds),\"busy_rounds\":\(busyRounds),"
        + "\"cpus\":[\((settings.cpus ?? []).map(String.init).joined(separator: ","))],"
        + "\"events\":[\(events.map(q).joined(separator: ","))],\"ports\":[\(ps.joined(separator: ","))]}"
    }
  }
}
