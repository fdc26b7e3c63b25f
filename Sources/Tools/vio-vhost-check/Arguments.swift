import VirtioCore
import VirtioNet
import VirtioVhostUser

/// `vio-vhost-check <command> --socket PATH [options]`; see `usage`.
struct Arguments {
  var command = ""
  var endpoint: VhostUserEndpoint = .client("")
  var layout = "split"
  var frames = 10_000
  var frameSize = 64
  var burst = 32
  var queueSize = 256
  var timeoutMilliseconds = 20_000
  var reconnectTimeoutMilliseconds = 60_000
  var blocks = 64
  var blockSize = 4096
  var seed: UInt64 = 7
  var mode = "loopback"
  var seconds = 5.0
  /// PAUSE instructions after a poll that moved nothing (bench-net).
  var idlePause = 0
  var queueDepth = 1
  var memoryMiB = 64
  var pages: SharedMemoryPages = .hugePreferred
  var verbose = false
  /// Feature bits not to negotiate (--without event-idx,in-order,...), for benchmarking their cost.
  var without: [Int] = []
  /// bench-net / net: refill, reclaim and doorbell pacing (--rx-refill, --tx-reclaim-below, --tx-kick-batch).
  var policy = NetQueuePolicy()
  /// bench-net: bytes per pool buffer (--buffer-size; 2048 by default) and from
  /// one buffer to the next (--buffer-stride; nil: the pool's odd-line default).
  var bufferSize = 2048
  var bufferStride: Int? = nil

  static let usage = """
    usage: vio-vhost-check <command> --socket PATH [--server] [options]
      net            send --frames frames through the backend (testpmd io forwarding loops them back), count both ways
      net-reconnect  as net, then wait for the backend to go away, reconnect, and send --frames more
      blk            write a pattern to --blocks blocks, flush, read back and compare; prints the sectors for a host-side check
      bench-net      --mode txonly|rxonly|loopback for --seconds; prints Mpps
      bench-blk      4 KiB random reads at --qd for --seconds; prints IOPS
    options: --layout split|packed  --frames N  --frame-size B  --burst N  --queue-size N  --timeout-ms MS
             --reconnect-timeout-ms MS  --blocks N  --block-size B  --seed N  --mode M  --seconds S  --qd N
             --memory-mib N  --pages huge|small  --idle-pause N  --without event-idx,indirect,in-order,mrg-rxbuf,csum  --verbose
             --rx-refill N  --tx-reclaim-below N  --tx-kick-batch N (NetQueuePolicy, 1 ... --queue-size)
             --buffer-size B (bench-net: pool buffer size, 2048 ... 4096)
             --buffer-stride B (bench-net: bytes between buffers, a multiple of 64 from the size to 8192;
                                default: an odd number of cache lines, 2112 for 2048-byte buffers)
    """

  init(_ argv: [String]) throws(UsageError) {
    var it = argv.makeIterator()
    guard let c = it.next() else { throw UsageError("no command") }
    command = c
    var socket: String? = nil
    var server = false
    func value(_ name: String) throws(UsageError) -> String {
      guard let v = it.next() else { throw UsageError("\(name) needs a value") }
      return v
    }
    func int(_ name: String) throws(UsageError) -> Int {
      let v = try value(name)
      guard let n = Int(v), n >= 0 else { throw UsageError("\(name) takes a number, not \(v)") }
      return n
    }
    while let a = it.next() {
      switch a {
      case "--socket": socket = try value(a)
      case "--server": server = true
      case "--layout":
        layout = try value(a)
        guard layout == "split" || layout == "packed" else { throw UsageError("--layout is split or packed") }
      case "--frames": frames = try int(a)
      case "--frame-size": frameSize = try int(a)
      case "--burst": burst = max(1, min(64, try int(a)))
      case "--queue-size": queueSize = try int(a)
      case "--timeout-ms": timeoutMilliseconds = try int(a)
      case "--reconnect-timeout-ms": reconnectTimeoutMilliseconds = try int(a)
      case "--blocks": blocks = try int(a)
      case "--block-size": blockSize = try int(a)
      case "--seed": seed = UInt64(try int(a))
      case "--mode": mode = try value(a)
      case "--idle-pause": idlePause = try int(a)
      case "--rx-refill": policy.rxRefillThreshold = try int(a)
      case "--tx-reclaim-below": policy.txReclaimBelow = try int(a)
      case "--tx-kick-batch": policy.txKickBatch = try int(a)
      case "--buffer-size": bufferSize = try int(a)
      case "--buffer-stride": bufferStride = try int(a)
      case "--seconds":
        let v = try value(a)
        guard let s = Double(v), s > 0 else { throw UsageError("--seconds takes a positive number") }
        seconds = s
      case "--qd": queueDepth = max(1, try int(a))
      case "--memory-mib": memoryMiB = max(2, try int(a))
      case "--pages":
        let v = try value(a)
        pages = v == "small" ? .small : v == "huge" ? .hugeRequired : .hugePreferred
      case "--verbose": verbose = true
      case "--without":
        for name in try value(a).split(separator: ",") {
          switch name {
          case "event-idx": without.append(29)
          case "indirect": without.append(28)
          case "in-order": without.append(35)
          case "mrg-rxbuf": without.append(15)
          case "csum": without += [0, 1]
          default: throw UsageError("--without takes event-idx, indirect, in-order, mrg-rxbuf, csum")
          }
        }
      default: throw UsageError("unknown option \(a)")
      }
    }
    guard let s = socket else { throw UsageError("--socket PATH is required") }
    endpoint = server ? .server(s) : .client(s)
    guard frameSize >= 60, frameSize <= 1514 else { throw UsageError("--frame-size is 60...1514") }
    for (name, v) in [("--rx-refill", policy.rxRefillThreshold), ("--tx-reclaim-below", policy.txReclaimBelow), ("--tx-kick-batch", policy.txKickBatch)] {
      if let v, v < 1 || v > queueSize { throw UsageError("\(name) is 1...\(queueSize) (the ring size, --queue-size)") }
    }
    guard bufferSize >= 2048, bufferSize <= 4096 else { throw UsageError("--buffer-size is 2048...4096") }
    let rounded = BufferPool.roundedSize(bufferSize)
    if let t = bufferStride, t < rounded || t > 8192 || t % 64 != 0 {
      throw UsageError("--buffer-stride is a multiple of 64 from the buffer size (\(rounded)) to 8192")
    }
  }
}

struct UsageError: Error {
  var message: String
  init(_ m: String) { message = m }
}
