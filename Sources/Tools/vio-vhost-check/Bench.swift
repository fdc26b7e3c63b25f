import CAllocCounter
import CVirtioAtomics
import CheckReport
import VirtioBlk
import VirtioCore
import VirtioNet
import VirtioOS
import VirtioVhostUser

/// `bench-net`: one polling thread, --mode
///   txonly    frames out as fast as the ring takes them (testpmd rxonly counts them)
///   rxonly    frames in from testpmd txonly, counted and freed
///   loopback  a first burst out, then every frame received goes back out as is
///             (testpmd io forwarding on the other side: the frames circulate)
/// No allocation, ARC or throw inside the loop; the clock is read every 256 iterations.
struct NetBenchBody: VirtioSessionBody {
  typealias Device = VhostUserTransport
  let args: Arguments
  let report: Report

  // VirtioDevice.run reaches this through the session-body protocol with Q only
  // known at run time, so without these the loop runs unspecialized: every
  // NetQueuePair and ring call goes through witness tables (issue #7: that was
  // most of the per-packet cost). The generic entry dispatches to these two.
  @_specialize(where Q == SplitVirtqueue)
  @_specialize(where Q == PackedVirtqueue)
  mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ s: inout VhostUserSession<Q>) throws(VirtioError) {
    var pool = try BufferPool(
      count: 4 * args.queueSize + 1024, bufferSize: args.bufferSize, headroom: 64, stride: args.bufferStride, memory: &s.transport.dma)
    var pair = NetQueuePair(
      rx: s.takeQueue(0), tx: s.takeQueue(1), rxDoorbell: s.transport.doorbell(queue: 0), txDoorbell: s.transport.doorbell(queue: 1),
      features: s.features, policy: args.policy)
    pair.refill(&pool)
    let mac = s.transport.options.mac
    let size = args.frameSize
    let burst = args.burst
    var v = InlineArray<64, PacketBuffer>(repeating: PacketBuffer(index: 0, offset: 0, length: 0))
    // A template frame copied into each TX buffer (as testpmd txonly copies its headers).
    let template = try s.transport.dma.allocate(byteCount: 2048, alignment: 64)
    Frames.write(template.pointer, seq: 0, size: size, mac: mac)
    var packets: UInt64 = 0
    // Iterations that moved nothing (ring full / nothing received): reported so
    // an instruction count per packet can leave the idle polling out.
    var idle: UInt64 = 0
    var iterations = 0
    let pauses = args.idlePause
    let duration = UInt64(args.seconds * 1e9)
    let allocsBefore = alloc_counter_thread()
    let start = monotonicNanoseconds()
    var now = start
    switch args.mode {
    case "txonly":
      while now &- start < duration {
        iterations &+= 1
        if iterations & 255 == 0 { now = monotonicNanoseconds() }
        // Whole bursts only: wait (reclaiming) until the ring has room for one,
        // rather than building frames the ring then refuses, or trickling
        // small batches that each cost the backend a pass.
        if pair.tx.freeCount < burst {
          pair.reclaim(&pool)
          if pair.tx.freeCount < burst {
            // A doorbell a kick batch held back goes now: the loop waits for the device.
            pair.flushTransmit()
            idle &+= 1
            vio_cpu_relax_times(pauses)
            continue
          }
        }
        let room = burst
        var k = 0
        while k < room, var b = pool.allocate() {
          b.length = UInt16(truncatingIfNeeded: size)
          (pool.pointer(b) + Int(b.offset)).copyMemory(from: template.pointer, byteCount: size)
          v[k] = b
          k &+= 1
        }
        let sent = pair.transmit(v.span.extracting(0..<k), pool: &pool)
        var j = sent
        while j < k {
          pool.release(v[j])
          j &+= 1
        }
        packets &+= UInt64(sent)
      }
    case "rxonly":
      while now &- start < duration {
        var span = v.mutableSpan
        let got = pair.receive(into: &span, pool: &pool)
        var j = 0
        while j < got {
          pool.release(v[j])
          j &+= 1
        }
        if got == 0 {
          idle &+= 1
          vio_cpu_relax_times(pauses)
        }
        packets &+= UInt64(got)
        iterations &+= 1
        if iterations & 255 == 0 { now = monotonicNanoseconds() }
      }
    default:  // loopback
      var k = 0
      while k < burst, var b = pool.allocate() {
        b.length = UInt16(truncatingIfNeeded: size)
        (pool.pointer(b) + Int(b.offset)).copyMemory(from: template.pointer, byteCount: size)
        v[k] = b
        k &+= 1
      }
      let first = pair.transmit(v.span.extracting(0..<k), pool: &pool)
      for j in first..<k { pool.release(v[j]) }
      while now &- start < duration {
        var span = v.mutableSpan
        let got = pair.receive(into: &span, pool: &pool)
        if got > 0 {
          let sent = pair.transmit(v.span.extracting(0..<got), pool: &pool)
          var j = sent
          while j < got {
            pool.release(v[j])
            j &+= 1
          }
        } else {
          pair.reclaim(&pool)
          pair.flushTransmit()
          idle &+= 1
          vio_cpu_relax_times(pauses)
        }
        packets &+= UInt64(got)
        iterations &+= 1
        if iterations & 255 == 0 { now = monotonicNanoseconds() }
      }
    }
    let seconds = Double(monotonicNanoseconds() &- start) / 1e9
    let allocs = alloc_counter_thread() &- allocsBefore
    let mpps = Double(packets) / seconds / 1e6
    let st = pair.stats
    report.result([
      "bench": "net", "mode": args.mode, "layout": "\(s.layout)", "frame": "\(size)", "packets": "\(packets)", "idle": "\(idle)", "iterations": "\(iterations)",
      "seconds": String(format3(seconds)), "mpps": format3(mpps), "tx_ring_full": "\(st.txRingFull)", "rx_no_buffers": "\(st.rxNoBuffers)",
      "notifications": "\(st.notifications)", "allocations": "\(allocs)", "policy": args.policy.summary.split(separator: " ").joined(separator: ","),
      "buffer_size": "\(args.bufferSize)", "buffer_stride": "\(pool.stride)",
    ])
    report.check("bench-net", packets > 0 && pair.brokenReason == nil, "\(args.mode) \(s.layout): \(format3(mpps)) Mpps over \(format3(seconds)) s")
    report.check("bench-net-allocations", allocs == 0, "\(allocs) heap allocations in the loop (\(packets) packets)")
  }
}

/// `bench-blk`: random reads of --block-size at --qd for --seconds; IOPS.
struct BlockBenchBody: VirtioSessionBody {
  typealias Device = VhostUserTransport
  let args: Arguments
  let report: Report

  mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ s: inout VhostUserSession<Q>) throws(VirtioError) {
    let config = try BlockConfig(reading: s.transport, features: s.features)
    var q = try BlockRequestQueue(queue: s.takeQueue(0), config: config, doorbell: s.transport.doorbell(queue: 0), memory: &s.transport.dma)
    let bs = args.blockSize
    let depth = min(args.queueDepth, q.depth)
    let buffers = try s.transport.dma.allocate(byteCount: depth * bs, alignment: 4096)
    let blocks = config.capacitySectors / UInt64(bs / 512)
    var x = args.seed | 1
    var completed: UInt64 = 0
    var errors: UInt64 = 0
    var inFlight = 0
    var freeBuf = Array(0..<depth)  // buffer index per free slot, reused; no allocation in the loop
    var freeTop = depth
    let duration = UInt64(args.seconds * 1e9)
    let allocsBefore = alloc_counter_thread()
    let start = monotonicNanoseconds()
    var now = start
    var iterations = 0
    while now &- start < duration {
      var added = 0
      while inFlight < depth && freeTop > 0 {
        x = Pattern.splitmix64(x)
        let buf = freeBuf[freeTop - 1]
        let r = q.submit(.read, sector: (x % blocks) * UInt64(bs / 512), address: buffers.iova + UInt64(buf * bs), length: bs, tag: UInt64(buf))
        guard r == .queued else { break }
        freeTop -= 1
        inFlight += 1
        added += 1
      }
      if added > 0 { q.kick() }
      while let c = q.nextCompletion() {
        freeBuf[freeTop] = Int(c.tag)
        freeTop += 1
        inFlight -= 1
        completed &+= 1
        if c.status != .ok { errors &+= 1 }
      }
      iterations &+= 1
      if iterations & 63 == 0 {
        now = monotonicNanoseconds()
        if q.brokenReason != nil { break }
      }
    }
    let seconds = Double(monotonicNanoseconds() &- start) / 1e9
    let allocs = alloc_counter_thread() &- allocsBefore
    let iops = Double(completed) / seconds
    report.result([
      "bench": "blk", "qd": "\(depth)", "block": "\(bs)", "ios": "\(completed)", "errors": "\(errors)", "seconds": format3(seconds),
      "iops": String(Int(iops)), "allocations": "\(allocs)",
    ])
    report.check("bench-blk-allocations", allocs == 0, "\(allocs) heap allocations in the loop (\(completed) requests)")
    report.check("bench-blk", completed > 0 && errors == 0 && q.brokenReason == nil, "QD\(depth) \(bs) B random read: \(Int(iops)) IOPS")
  }
}

func format3(_ x: Double) -> String {
  let v = (x * 1000).rounded() / 1000
  return "\(v)"
}
