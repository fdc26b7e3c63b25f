import CheckReport
import VirtioBlk
import VirtioCore
import VirtioOS
import VirtioSpec
import VirtioVhostUser

/// Submits whatever `next` yields, keeping at most `depth` requests in flight,
/// until `total` requests completed; completions go to `done`. Returns nil or why it stopped.
func runRequests<Q: Virtqueue & ~Copyable>(
  _ q: inout BlockRequestQueue<Q>, total: Int, depth: Int, timeoutMilliseconds: Int,
  submit: (inout BlockRequestQueue<Q>, Int) -> BlockSubmitResult, done: (BlockCompletion) -> Void
) -> String? {
  var submitted = 0
  var completed = 0
  let start = monotonicNanoseconds()
  var idle = 0
  while completed < total {
    var added = 0
    while submitted < total && submitted - completed < depth {
      let r = submit(&q, submitted)
      if r == .queueFull { break }
      guard r == .queued else { return "request \(submitted) refused: \(r)" }
      submitted += 1
      added += 1
    }
    if added > 0 { q.kick() }
    var got = 0
    while let c = q.nextCompletion() {
      done(c)
      completed += 1
      got += 1
    }
    if let why = q.brokenReason { return "queue broken: \(why)" }
    if got == 0 && added == 0 {
      idle += 1
      if idle & 1023 == 0 && milliseconds(since: start) > timeoutMilliseconds {
        return "\(total - completed) requests still outstanding after \(timeoutMilliseconds) ms"
      }
    } else {
      idle = 0
    }
  }
  return nil
}

/// `blk`: pattern write + flush + read back + compare; the script checks the file.
struct BlockCheckBody: VirtioSessionBody {
  typealias Device = VhostUserTransport
  let args: Arguments
  let report: Report

  mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ s: inout VhostUserSession<Q>) throws(VirtioError) {
    let config = try BlockConfig(reading: s.transport, features: s.features)
    report.pass(
      "blk-config",
      "\(s.layout) ring; capacity \(config.capacitySectors) sectors (\(config.capacityBytes >> 20) MiB), block \(config.blockSize), seg_max \(config.segmentsMax.map { String($0) } ?? "-"), flush \(config.supportsFlush), ro \(config.readOnly); features \(s.features.names(device: .block).joined(separator: ","))"
    )
    let status = s.transport.readStatus()
    report.check("blk-driver-ok", status.contains(.driverOK) && !status.contains(.failed), "device_status \(status)")
    var q = try BlockRequestQueue(queue: s.takeQueue(0), config: config, doorbell: s.transport.doorbell(queue: 0), memory: &s.transport.dma)
    let bs = args.blockSize
    let sectorsPerBlock = UInt64(bs / 512)
    let totalBlocks = config.capacitySectors / sectorsPerBlock
    guard totalBlocks > 0 else {
      report.fail("blk-write", "the device has no room for one \(bs)-byte block")
      return
    }
    let blocks = pickBlocks(count: args.blocks, of: totalBlocks, seed: args.seed)
    let out = try s.transport.dma.allocate(byteCount: blocks.count * bs, alignment: 4096)
    let back = try s.transport.dma.allocate(byteCount: blocks.count * bs, alignment: 4096)
    for (i, b) in blocks.enumerated() {
      Pattern.fill(out.pointer + i * bs, bytes: bs, seed: args.seed, sector: b * sectorsPerBlock)
    }
    back.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: blocks.count * bs)
    let depth = min(32, q.depth)

    var failures = 0
    let writeError = runRequests(
      &q, total: blocks.count, depth: depth, timeoutMilliseconds: args.timeoutMilliseconds,
      submit: { q, i in q.submit(.write, sector: blocks[i] * sectorsPerBlock, address: out.iova + UInt64(i * bs), length: bs, tag: UInt64(i)) },
      done: { c in if c.status != .ok { failures += 1 } })
    report.check("blk-write", writeError == nil && failures == 0, writeError ?? "\(blocks.count) blocks of \(bs) B written, \(failures) failed")
    if config.supportsFlush {
      var flushStatus = BlockStatus.invalid(0xFF)
      let e = runRequests(
        &q, total: 1, depth: 1, timeoutMilliseconds: args.timeoutMilliseconds, submit: { q, _ in q.submitFlush(tag: 999) },
        done: { c in flushStatus = c.status })
      report.check("blk-flush", e == nil && flushStatus == .ok, e ?? "flush \(flushStatus)")
    }
    failures = 0
    let readError = runRequests(
      &q, total: blocks.count, depth: depth, timeoutMilliseconds: args.timeoutMilliseconds,
      submit: { q, i in q.submit(.read, sector: blocks[i] * sectorsPerBlock, address: back.iova + UInt64(i * bs), length: bs, tag: UInt64(i)) },
      done: { c in if c.status != .ok || c.bytes != UInt32(bs) { failures += 1 } })
    var mismatched: [UInt64] = []
    for (i, b) in blocks.enumerated()
    where Pattern.firstMismatch(back.pointer + i * bs, bytes: bs, seed: args.seed, sector: b * sectorsPerBlock) != nil {
      mismatched.append(b)
    }
    report.check(
      "blk-readback", readError == nil && failures == 0 && mismatched.isEmpty,
      readError ?? "\(blocks.count) blocks read back, \(failures) failed, \(mismatched.count) differ\(mismatched.isEmpty ? "" : " (blocks \(mismatched.prefix(8).map { String($0) }.joined(separator: ",")))")")
    report.check("blk-broken", q.brokenReason == nil, "queue state: \(q.brokenReason.map { "\($0)" } ?? "healthy")")
    report.result([
      "seed": "\(args.seed)", "block_size": "\(bs)", "sectors": blocks.map { String($0 * sectorsPerBlock) }.joined(separator: ","),
    ])
  }
}
