import CheckReport
import Glibc
import VirtioCore
import VirtioOS
import VirtioVFIO

/// What happened to one request put through a queue.
struct RoundTrip {
  /// The used buffer, when the device returned it.
  var used: UsedBuffer?
  /// The queue's interrupt, when it came before the timeout.
  var interrupt: InterruptWait
  var vector: UInt16?
  var milliseconds: Int
  /// Why it failed, when it did.
  var error: String?
}

/// Offers one chain on queue `queue`, asks for an interrupt, rings the doorbell,
/// waits for the queue's MSI-X eventfd and takes the used buffer back.
/// Generic over the ring layout: the same code runs split and packed.
func roundTrip<Q: ConstructibleVirtqueue & ~Copyable>(
  _ session: inout VirtioPCISession<Q>, queue: Int, chain: [BufferSegment], token: UInt64, timeoutMilliseconds: Int
) -> RoundTrip {
  let start = monotonicMilliseconds()
  let vector = session.transport.vector(ofQueue: queue)
  // Interrupt mode: ask for an interrupt before the work is submitted, so it cannot be missed.
  _ = session.queues[queue].enableInterrupts()
  let added = session.queues[queue].add(chain.span, token: token)
  guard added == .added else {
    return RoundTrip(used: nil, interrupt: .timedOut, vector: vector, milliseconds: 0, error: "add returned \(added)")
  }
  session.kick(queue)
  let wait = session.waitForInterrupt(queue: queue, timeoutMilliseconds: timeoutMilliseconds)
  // Collect the used buffer (poll briefly: without an interrupt the device may still have completed).
  var used: UsedBuffer? = nil
  let pollUntil = monotonicMilliseconds() + (wait == .timedOut ? 100 : timeoutMilliseconds)
  while used == nil && monotonicMilliseconds() < pollUntil {
    switch session.queues[queue].nextUsed() {
    case .used(let u): used = u
    case .broken:
      let why = session.queues[queue].brokenReason.map { "\($0)" } ?? "broken"
      return RoundTrip(used: nil, interrupt: wait, vector: vector, milliseconds: monotonicMilliseconds() - start, error: "queue broken: \(why)")
    case .empty: usleep(1000)
    }
  }
  let ms = monotonicMilliseconds() - start
  guard let u = used else {
    return RoundTrip(used: nil, interrupt: wait, vector: vector, milliseconds: ms, error: "the device did not return the buffer within \(timeoutMilliseconds) ms")
  }
  guard u.token == token else {
    return RoundTrip(used: u, interrupt: wait, vector: vector, milliseconds: ms, error: "used token \(u.token), expected \(token)")
  }
  return RoundTrip(used: u, interrupt: wait, vector: vector, milliseconds: ms, error: nil)
}

/// The interrupt part of a round trip as a check result.
func reportInterrupt(_ report: Report, _ name: String, _ rt: RoundTrip, taken: UInt64) {
  guard let v = rt.vector else {
    report.fail(name, "the queue has no MSI-X vector")
    return
  }
  switch rt.interrupt {
  case .fired(let n):
    report.pass(name, "MSI-X vector \(v) fired (\(n) on the eventfd, \(taken) taken in all) within \(rt.milliseconds) ms")
  case .timedOut:
    report.fail(name, "no interrupt on MSI-X vector \(v) within the timeout (used buffer \(rt.used == nil ? "not returned" : "returned"))")
  case .failed(let e):
    report.fail(name, "epoll_wait failed: \(Sys.errnoText(e))")
  }
}
