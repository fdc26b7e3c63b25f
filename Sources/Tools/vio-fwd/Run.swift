import Glibc
import PacketIO
import VioMetrics
import VirtioCore
import VirtioNet

/// The main thread's part: start one worker per queue pair, watch links and
/// print live lines until the duration is over or a stop is requested, then
/// join the workers and report.
struct Run {
  let settings: Settings
  /// Where the counters are published for scraping, when --metrics-port/--metrics-socket asked for it.
  let metrics: MetricsRun?

  func execute(_ group: inout PortGroup) throws -> Int32 {
    let s = settings
    let portCount = group.count
    let peers = (0..<portCount).map { p in s.mode == .io || s.mode == .macswap ? ((p ^ 1) < portCount ? p ^ 1 : p) : p }
    let templates = group.ports.enumerated().map { (i, p) in Self.template(port: i, mac: p.mac, size: s.pktSize) }
    var boxes: [WorkerBox] = []
    for q in 0..<group.queuesPerPort {
      var queues = WorkerQueues(capacity: portCount)
      for p in 0..<portCount { queues.append(group.takeQueue(port: p, queue: q)) }
      if s.wait != .poll && !queues.canSleep {
        Console.note("worker \(q): a queue has no interrupt of its own; it polls (--wait \(s.wait.rawValue) needs one MSI-X vector per receive queue)")
      }
      let pool: BufferPool
      do throws(VirtioError) {
        pool = try group.makeBufferPool(count: group.poolSize(burst: s.burst))
      } catch {
        Console.error(error.message)
        return 1
      }
      boxes.append(WorkerBox(queues: queues, pool: pool, plan: WorkerPlan(index: q, settings: s, peers: peers, templates: templates)))
    }
    var threads = OwnedArray<WorkerThread>(capacity: boxes.count)
    let start = monotonicNanoseconds()
    for (i, box) in boxes.enumerated() {
      do throws(SysError) {
        threads.append(try WorkerThread(cpu: s.cpus?[i] ?? -1) { box.run() })
      } catch {
        Console.error("worker \(i): cannot start its thread: \(error)")
        StopSignal.request()
        return 1
      }
    }
    let desc = group.ports.enumerated().map { (i, p) in
      "port \(i) \(p.address) (\(p.path), \(p.detail.split(separator: ";").first ?? ""), mac \(p.mac.map { "\($0)" } ?? "-"), mtu \(p.mtu), rings \(p.rxRingSize)/\(p.txRingSize), offloads \(p.offloads), link \(p.linkUp ? "up" : "down"))"
    }
    for (i, p) in group.ports.enumerated() {
      if p.dmaAddressing == .physical {
        Console.note(
          "WARNING: port \(i) \(p.address) runs WITHOUT an IOMMU (--allow-no-iommu): the device reads and writes memory by physical address, and nothing contains a driver bug")
      }
      if let f = p.fallback { Console.note("port \(i) \(p.address): kernel path (\(f.kernelName)) because \(f.summary): \(f.message)") }
    }
    Console.note(
      "forwarding: mode \(s.mode.rawValue), \(portCount) port(s) x \(group.queuesPerPort) queue(s), burst \(s.burst), wait \(s.wait.rawValue)\(s.idlePauses > 0 ? ", idle pause \(s.idlePauses)" : "")"
        + (s.cpus.map { "; workers pinned to CPUs \($0.map(String.init).joined(separator: ","))" } ?? "") + "; "
        + desc.joined(separator: "; "))

    let interfaceDrops = InterfaceDrops(group.ports)
    var events: [String] = []
    var linkEvents = [Int](repeating: 0, count: portCount)
    var exitCode: Int32 = 0
    var provoke = TestOnlyNeedsReset(after: s.testOnlyNeedsResetAfter)
    var clearFilters = TestOnlyClearFilters(after: s.testOnlyClearFiltersAfter, vlans: s.vlanFilter)
    // A stats period of 0 means no live lines: the next one is never due.
    // (Both sums saturate: `start &+ UInt64.max` used to wrap to start - 1, a
    // live line on every pass of this loop.)
    let period = s.statsPeriodNanoseconds
    var nextStats = Self.deadline(start, after: period)
    var last = (0..<portCount).map { group.stats(port: $0) }
    var lastTime = start
    let end = Self.deadline(start, after: s.durationNanoseconds)
    var activity = Activity(start: start)
    while !StopSignal.requested {
      let now = monotonicNanoseconds()
      if now >= end { break }
      let wake = min(nextStats, end, now &+ 100_000_000)
      let timeout = Int((wake &- min(wake, now)) / 1_000_000)
      for e in group.pollEvents(timeoutMilliseconds: max(timeout, 1)) {
        let text = "\(e) (\(group.ports[e.port].address))"
        events.append(text)
        Console.note(text)
        linkEvents[e.port] += 1
        // A port whose device could not be set up again after DEVICE_NEEDS_RESET fails the run, at its end.
        if case .failed = e { exitCode = 1 }
        // A removed port (hot-unplug) stops; the others carry on: not a reason to stop forwarding.
      }
      provoke.poll(&group)
      clearFilters.poll(&group)
      let t = monotonicNanoseconds()
      activity.sample(at: t, packets: (0..<portCount).reduce(UInt64(0)) { $0 &+ Report.moved(group.stats(port: $1), s.mode) })
      metrics?.update(Self.samples(group, linkEvents))
      if t >= nextStats {
        let current = (0..<portCount).map { group.stats(port: $0) }
        let perQueue = (0..<portCount).map { p in (0..<group.queuesPerPort).map { group.stats(port: p, queue: $0).rxPackets } }
        Console.note(Report.live(group, current, last, seconds: Double(t &- lastTime) / 1e9, elapsed: Double(t &- start) / 1e9, queueRx: perQueue))
        if let f = s.statsFile { Report.writeStatsFile(f, group, current, elapsed: Double(t &- start) / 1e9) }
        last = current
        lastTime = t
        nextStats = Self.deadline(t, after: period)
      }
    }
    StopSignal.request()
    _ = consume threads  // joins every worker (WorkerThread's deinit); their queues and pools go with them
    let elapsed = Double(monotonicNanoseconds() &- start) / 1e9
    let results = boxes.map(\.result)
    for r in results { for b in r.broken { Console.error("queue broken: \(b)"); exitCode = 1 } }
    let totals = (0..<portCount).map { group.stats(port: $0) }
    if let f = s.statsFile { Report.writeStatsFile(f, group, totals, elapsed: elapsed) }
    let summary = Report.Summary(
      settings: s, elapsed: elapsed, ports: group.ports, stats: totals,
      queues: (0..<portCount).map { p in (0..<group.queuesPerPort).map { group.stats(port: p, queue: $0) } }, configInterrupts: (0..<portCount).map { group.configInterrupts(port: $0) },
      links: (0..<portCount).map { group.isLinkUp(port: $0) }, linkEvents: linkEvents,
      reconnects: (0..<portCount).map { group.reconnects(port: $0) }, removed: (0..<portCount).map { group.isRemoved(port: $0) },
      announcements: (0..<portCount).map { group.announcements(port: $0) },
      recoveries: (0..<portCount).map { group.recoveries(port: $0) }, failed: (0..<portCount).map { group.isFailed(port: $0) },
      events: events,
      cpuNanoseconds: results.reduce(0) { $0 &+ $1.cpuNanoseconds }, sleeps: results.reduce(0) { $0 &+ $1.sleeps },
      rounds: results.reduce(0) { $0 &+ $1.rounds }, busyRounds: results.reduce(0) { $0 &+ $1.busyRounds },
      activeSeconds: activity.activeSeconds, peakPPS: activity.peak, kernelTxDropped: interfaceDrops.sinceStart())
    // The exporter's last values are the summary's (the workers are joined).
    metrics?.update(Self.samples(group, linkEvents))
    for line in summary.text() { Console.note(line) }
    if s.json { Console.out(summary.json()) }
    if let note = metrics?.finish() { Console.note(note) }
    return exitCode
  }

  /// Every queue's published counters and every port's state, for the metrics exporter (main thread).
  static func samples(_ group: borrowing PortGroup, _ linkEvents: [Int]) -> [MetricSample] {
    let ports = (0..<group.count).map { p in
      NetSamples.PortState(
        address: group.ports[p].address.description, linkUp: group.isLinkUp(port: p), linkChanges: UInt64(linkEvents[p]),
        configInterrupts: group.configInterrupts(port: p), reconnects: group.reconnects(port: p), recoveries: group.recoveries(port: p))
    }
    let queues = (0..<group.count).map { p in (0..<group.queuesPerPort).map { group.stats(port: p, queue: $0) } }
    return NetSamples.samples(queues: queues, ports: ports)
  }

  /// `now + nanoseconds`, or never (UInt64.max) for 0 or a sum past the clock's range.
  static func deadline(_ now: UInt64, after nanoseconds: UInt64) -> UInt64 {
    guard nanoseconds > 0 else { return UInt64.max }
    let (t, overflow) = now.addingReportingOverflow(nanoseconds)
    return overflow ? UInt64.max : t
  }

  /// txonly's frame for a port: to 02:00:00:00:00:<port>, from the port's MAC
  /// (or a local one), EtherType 0x88B5 (local experimental), "vio-fwd",
  /// then the sequence number at 22 and zero padding.
  static func template(port: Int, mac: MACAddress?, size: Int) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: size)
    let dst: [UInt8] = [0x02, 0, 0, 0, 0, UInt8(truncatingIfNeeded: port)]
    let src: [UInt8] = mac.map { [$0.bytes.0, $0.bytes.1, $0.bytes.2, $0.bytes.3, $0.bytes.4, $0.bytes.5] } ?? [0x02, 0, 0, 0, 1, UInt8(truncatingIfNeeded: port)]
    f.replaceSubrange(0..<6, with: dst)
    f.replaceSubrange(6..<12, with: src)
    f[12] = 0x88
    f[13] = 0xB5
    f.replaceSubrange(14..<21, with: Array("vio-fwd".utf8))
    return f
  }
}

/// When packets moved, sampled by the main thread at least every 100 ms: the
/// forwarding rate over the time traffic flowed (not the whole run), and the
/// best rate over one sample interval.
struct Activity {
  var previous: UInt64
  var packets: UInt64 = 0
  var first: UInt64? = nil
  var last: UInt64 = 0
  var peak: Double = 0

  init(start: UInt64) { previous = start }

  mutating func sample(at t: UInt64, packets now: UInt64) {
    defer {
      previous = t
      packets = now
    }
    guard now != packets else { return }
    if first == nil { first = previous }
    last = t
    let dt = Double(t &- previous) / 1e9
    if dt >= 0.05 { peak = max(peak, Double(now &- packets) / dt) }
  }

  var activeSeconds: Double { first.map { Double(last &- $0) / 1e9 } ?? 0 }
}
