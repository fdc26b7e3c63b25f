import CheckReport
import VirtioCore
import VirtioNet
import VirtioOS
import VirtioSpec
import VirtioVhostUser

/// Counters of one net run, across phases.
struct NetCounters {
  var sent: UInt64 = 0
  var received: UInt64 = 0
  var duplicates: UInt64 = 0
  var corrupted: UInt64 = 0
  var foreign: UInt64 = 0
  var txRefused: UInt64 = 0
}

/// How a phase of exact traffic ended.
enum PhaseEnd: Equatable {
  case complete
  case timedOut
  case backendGone
  case broken(String)
}

/// Sends frames `range` through the pair, at most `window` unanswered at a
/// time (so testpmd never finds our RX ring empty and drops), receives what
/// comes back and checks each frame. Ends when every frame of the range came
/// back, on timeout, on a broken queue, or when the backend hangs up.
struct NetTraffic: ~Copyable {
  var counters = NetCounters()
  var seen: SeenSet
  let frameSize: Int
  let burst: Int
  let mac: [UInt8]
  let window: UInt64

  init(capacity: Int, frameSize: Int, burst: Int, mac: [UInt8], window: Int) {
    seen = SeenSet(capacity: capacity)
    self.frameSize = frameSize
    self.burst = burst
    self.mac = mac
    self.window = UInt64(window)
  }

  mutating func exchange<Q: ConstructibleVirtqueue & ~Copyable>(
    _ range: Range<UInt64>, pair: inout NetQueuePair<Q, Q>, pool: inout BufferPool, session: borrowing VhostUserSession<Q>,
    timeoutMilliseconds: Int, paceNanoseconds: UInt64 = 0
  ) -> PhaseEnd {
    var next = range.lowerBound
    var phaseReceived: UInt64 = 0
    var out = InlineArray<64, PacketBuffer>(repeating: PacketBuffer(index: 0, offset: 0, length: 0))
    var inb = InlineArray<64, PacketBuffer>(repeating: PacketBuffer(index: 0, offset: 0, length: 0))
    let start = monotonicNanoseconds()
    var idle = 0
    var lastSend: UInt64 = 0
    while true {
      var progress = false
      // Paced phases send one burst per `paceNanoseconds` (a clock check, no sleep).
      let due = paceNanoseconds == 0 || monotonicNanoseconds() &- lastSend >= paceNanoseconds
      // Send while the window allows.
      if due && next < range.upperBound && next - range.lowerBound - phaseReceived < window {
        lastSend = monotonicNanoseconds()
        let room = Int(min(UInt64(burst), range.upperBound - next, window - (next - range.lowerBound - phaseReceived)))
        var k = 0
        while k < room, var b = pool.allocate() {
          b.length = UInt16(frameSize)
          Frames.write(pool.pointer(b) + Int(b.offset), seq: next + UInt64(k), size: frameSize, mac: mac)
          out[k] = b
          k += 1
        }
        let sent = pair.transmit(out.span.extracting(0..<k), pool: &pool)
        for j in sent..<k { pool.release(out[j]) }
        counters.txRefused += UInt64(k - sent)
        counters.sent += UInt64(sent)
        next += UInt64(sent)
        if sent > 0 { progress = true }
      } else {
        pair.reclaim(&pool)
      }
      // Receive and check.
      var span = inb.mutableSpan
      let got = pair.receive(into: &span, pool: &pool)
      for j in 0..<got {
        let b = inb[j]
        switch Frames.parse(pool.pointer(b) + Int(b.offset), length: Int(b.length), expectedSize: frameSize) {
        case .ours(let seq, let intact):
          if !seen.insert(seq) {
            counters.duplicates += 1
          } else {
            counters.received += 1
            if range.contains(seq) { phaseReceived += 1 }
            if !intact { counters.corrupted += 1 }
          }
        case .foreign:
          counters.foreign += 1
        }
        pool.release(b)
      }
      if got > 0 { progress = true }
      if let why = pair.brokenReason { return .broken("\(why)") }
      if phaseReceived == UInt64(range.count) { return .complete }
      if progress {
        idle = 0
        continue
      }
      idle += 1
      if idle & 255 == 0 {
        if session.peerGone() { return .backendGone }
        if milliseconds(since: start) > timeoutMilliseconds { return .timedOut }
      }
    }
  }
}

extension NetTraffic {
  /// Receives (and checks) until nothing has arrived for `quietMilliseconds`
  /// (at most `limitMilliseconds`): after a reconnect the new backend first
  /// returns the frames it resumed; the next phase's window starts after them.
  mutating func settle<Q: ConstructibleVirtqueue & ~Copyable>(
    pair: inout NetQueuePair<Q, Q>, pool: inout BufferPool, quietMilliseconds: Int, limitMilliseconds: Int
  ) {
    var inb = InlineArray<64, PacketBuffer>(repeating: PacketBuffer(index: 0, offset: 0, length: 0))
    let start = monotonicNanoseconds()
    var last = start
    while milliseconds(since: last) < quietMilliseconds && milliseconds(since: start) < limitMilliseconds {
      pair.reclaim(&pool)
      var span = inb.mutableSpan
      let got = pair.receive(into: &span, pool: &pool)
      if got > 0 { last = monotonicNanoseconds() }
      for j in 0..<got {
        if case .ours(let seq, let intact) = Frames.parse(pool.pointer(inb[j]) + Int(inb[j].offset), length: Int(inb[j].length), expectedSize: frameSize) {
          if seen.insert(seq) {
            counters.received += 1
            if !intact { counters.corrupted += 1 }
          } else {
            counters.duplicates += 1
          }
        } else {
          counters.foreign += 1
        }
        pool.release(inb[j])
      }
    }
  }
}

/// `net` and `net-reconnect`: open, negotiate the asked layout, exchange
/// frames with testpmd (io forwarding sends each back), report.
struct NetCheckBody: VirtioSessionBody {
  typealias Device = VhostUserTransport
  let args: Arguments
  let report: Report
  let reconnect: Bool

  mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ s: inout VhostUserSession<Q>) throws(VirtioError) {
    report.check(
      "net-ring-layout", "\(s.layout)" == args.layout,
      "negotiated \(s.layout) (asked \(args.layout)); features \(s.features.names(device: .net).joined(separator: ","))")
    let status = s.transport.readStatus()
    report.check("net-driver-ok", status.contains(.driverOK) && !status.contains(.failed), "device_status \(status)")
    var pool = try BufferPool(count: 4 * args.queueSize + 512, bufferSize: 2048, headroom: 64, memory: &s.transport.dma)
    var pair = NetQueuePair(
      rx: s.takeQueue(0), tx: s.takeQueue(1), rxDoorbell: s.transport.doorbell(queue: 0), txDoorbell: s.transport.doorbell(queue: 1),
      features: s.features)
    pair.refill(&pool)
    let n = UInt64(args.frames)
    let mac = s.transport.options.mac
    // The gap phase runs until the backend dies: one burst per millisecond, ~32k frames/s.
    let gapCapacity: UInt64 = 1 << 22
    var traffic = NetTraffic(capacity: Int(2 * n + gapCapacity), frameSize: args.frameSize, burst: args.burst, mac: mac, window: args.queueSize / 2)

    // Phase 1: every frame out and back.
    let start = monotonicNanoseconds()
    let end1 = traffic.exchange(0..<n, pair: &pair, pool: &pool, session: s, timeoutMilliseconds: args.timeoutMilliseconds)
    let ms = max(1, milliseconds(since: start))
    let c1 = traffic.counters
    report.check(
      "net-roundtrip", end1 == .complete && c1.received == n,
      "\(c1.sent) frames of \(args.frameSize) B sent, \(c1.received) came back in \(ms) ms (\(end1)); duplicates \(c1.duplicates), foreign \(c1.foreign), tx refused \(c1.txRefused)")
    report.check("net-integrity", c1.corrupted == 0 && c1.duplicates == 0, "\(c1.corrupted) corrupted, \(c1.duplicates) duplicated frames")
    guard reconnect else {
      let (sentOne, gotOne) = interruptCheck(&pair, pool: &pool, session: s, traffic: &traffic, seq: n)
      // Everything that went out and came back, the interrupt frame included (testpmd counts it too).
      report.result(["phase": "1", "tx": "\(c1.sent + sentOne)", "rx": "\(c1.received + gotOne)", "layout": "\(s.layout)"])
      report.check("net-broken", pair.brokenReason == nil, "queue state: \(pair.brokenReason.map { "\($0)" } ?? "healthy")")
      return
    }

    report.result(["phase": "1", "tx": "\(c1.sent)", "rx": "\(c1.received)", "layout": "\(s.layout)"])
    // Gap: keep frames in flight until the backend goes away (the test kills it now).
    report.emit("PHASE1 DONE")
    let gap = n..<(n + gapCapacity)
    let endGap = traffic.exchange(
      gap, pair: &pair, pool: &pool, session: s, timeoutMilliseconds: args.reconnectTimeoutMilliseconds, paceNanoseconds: 1_000_000)
    report.check("net-backend-gone", endGap == .backendGone, "the data loop saw the backend hang up (\(endGap)) after \(traffic.counters.sent - c1.sent) more frames")
    guard endGap == .backendGone else { return }
    let sentBefore = traffic.counters.sent

    // Drain what the old backend returned, then resume both rings where it stopped.
    _ = pair.reclaim(&pool)
    var inb = InlineArray<64, PacketBuffer>(repeating: PacketBuffer(index: 0, offset: 0, length: 0))
    while true {
      var span = inb.mutableSpan
      let got = pair.receive(into: &span, pool: &pool)
      if got == 0 { break }
      for j in 0..<got {
        if case .ours(let seq, _) = Frames.parse(pool.pointer(inb[j]) + Int(inb[j].offset), length: Int(inb[j].length), expectedSize: args.frameSize),
          traffic.seen.insert(seq)
        {
          traffic.counters.received += 1
        }
        pool.release(inb[j])
      }
    }
    let positions = [0: pair.rx.deviceResumePosition, 1: pair.tx.deviceResumePosition]
    let t0 = monotonicNanoseconds()
    do throws(VirtioError) {
      try s.reconnect(taken: positions, timeoutMilliseconds: args.reconnectTimeoutMilliseconds)
      report.pass(
        "net-reconnect",
        "connection \(s.transport.connections) after \(milliseconds(since: t0)) ms; rx resumes at \(positions[0]!), tx at \(positions[1]!)")
    } catch {
      report.fail("net-reconnect", error.message)
      return
    }

    // The frames still in flight at the kill come back first (the rings resumed).
    traffic.settle(pair: &pair, pool: &pool, quietMilliseconds: 200, limitMilliseconds: 5000)

    // Phase 2: a fresh range, every frame out and back through the new backend.
    let phase2 = (n + gapCapacity)..<(2 * n + gapCapacity)
    let end2 = traffic.exchange(phase2, pair: &pair, pool: &pool, session: s, timeoutMilliseconds: args.timeoutMilliseconds)
    let c = traffic.counters
    let phase2Back = traffic.seen.count(in: phase2)
    report.check(
      "net-after-reconnect", end2 == .complete && phase2Back == Int(n),
      "\(phase2Back) of \(n) frames came back through the restarted backend (\(end2))")
    let gapSent = sentBefore - c1.sent
    let gapBack = traffic.seen.count(in: gap)
    let lost = c.sent - c.received
    // Every frame of both phases came back; only frames of the gap may be lost.
    report.check(
      "net-losses-counted",
      lost <= gapSent && traffic.seen.count(in: 0..<n) == Int(n) && phase2Back == Int(n) && c.duplicates == 0 && c.corrupted == 0,
      "sent \(c.sent), received \(c.received), lost \(lost) (all in the gap: \(gapSent) sent while the backend died, \(gapBack) of them came back), duplicates \(c.duplicates), corrupted \(c.corrupted)")
    report.result(["phase": "2", "tx": "\(c.sent - sentBefore)", "rx": "\(phase2Back)", "lost": "\(lost)", "gap_sent": "\(gapSent)"])
  }

  /// The call eventfd: ask for an RX interrupt, send one frame, sleep on the
  /// eventfd (epoll) until the backend signals, then take the frame.
  func interruptCheck<Q: ConstructibleVirtqueue & ~Copyable>(
    _ pair: inout NetQueuePair<Q, Q>, pool: inout BufferPool, session s: borrowing VhostUserSession<Q>, traffic: inout NetTraffic, seq: UInt64
  ) -> (sent: UInt64, received: UInt64) {
    _ = s.waitForInterrupt(queue: 0, timeoutMilliseconds: 0)  // clear what polling left behind
    let pending = pair.armReceiveInterrupt()
    guard !pending, var b = pool.allocate() else {
      report.fail("net-interrupt", "could not arm the RX interrupt (\(pending ? "frames still pending" : "pool empty"))")
      return (0, 0)
    }
    b.length = UInt16(args.frameSize)
    Frames.write(pool.pointer(b) + Int(b.offset), seq: seq, size: args.frameSize, mac: traffic.mac)
    var one = InlineArray<1, PacketBuffer>(repeating: b)
    guard pair.transmit(one.span, pool: &pool) == 1 else {
      pool.release(b)
      report.fail("net-interrupt", "the TX ring refused the frame")
      return (0, 0)
    }
    let t0 = monotonicNanoseconds()
    let wait = s.waitForInterrupt(queue: 0, timeoutMilliseconds: 5000)
    let us = (monotonicNanoseconds() - t0) / 1000
    pair.disarmReceiveInterrupt()
    var got = 0
    let deadline = monotonicNanoseconds() + 1_000_000_000
    while got == 0 && monotonicNanoseconds() < deadline {
      var span = one.mutableSpan
      got = pair.receive(into: &span, pool: &pool)
      if got > 0 { pool.release(one[0]) }
    }
    report.check(
      "net-interrupt", wait != .timedOut && got == 1,
      "call eventfd \(wait) after \(us) µs, frame \(got == 1 ? "received" : "missing"); \(s.transport.interruptsTaken(queue: 0)) signals on queue 0")
    return (1, UInt64(got))
  }
}
