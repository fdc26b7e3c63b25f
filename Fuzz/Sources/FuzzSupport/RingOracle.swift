import VirtioCore

/// What the driver has handed to the device, kept apart from the queue under
/// test: every token it posted and the device-writable bytes of each. A queue
/// may only ever return a token that is in here (once), with a length no
/// larger than posted; with IN_ORDER, always the oldest.
public struct RingOracle {
  public let inOrder: Bool
  /// token → device-writable bytes posted.
  var posted: [UInt64: UInt32] = [:]
  /// Tokens in the order they were added (for IN_ORDER).
  var order: [UInt64] = []
  var nextToken: UInt64 = 1
  public private(set) var returned = 0

  public init(inOrder: Bool) { self.inOrder = inOrder }

  public var inFlight: Int { posted.count }

  /// A fresh token, never used before in this run.
  public mutating func token() -> UInt64 {
    defer { nextToken &+= 1 }
    return nextToken
  }

  public mutating func added(_ token: UInt64, writable: UInt32) {
    posted[token] = writable
    order.append(token)
  }

  /// Checks one buffer a queue returned, and forgets it.
  public mutating func returned(_ u: UsedBuffer) {
    guard let writable = posted.removeValue(forKey: u.token) else {
      fatalError("fuzz invariant violated: token \(u.token) returned but not in flight (never posted, or returned twice)")
    }
    require(u.length <= writable, "token \(u.token): length \(u.length) above the \(writable) writable bytes posted")
    let i = order.firstIndex(of: u.token)!
    require(!inOrder || i == 0, "IN_ORDER: token \(u.token) returned before older token \(order[0])")
    order.remove(at: i)
    returned += 1
  }
}

/// The driver's side of a fuzz program, the same for both ring layouts:
/// add (one segment or a chain), publish, poll, interrupt hints. Each call
/// checks the queue's answer against the oracle.
public enum DriverStep {
  /// Runs driver operation `op` (0…5) on `q`.
  public static func run<Q: Virtqueue & ~Copyable>(
    _ op: UInt8, _ q: inout Q, _ input: inout FuzzInput, _ oracle: inout RingOracle
  ) {
    let wasBroken = q.isBroken
    switch op {
    case 0 where input.bool():
      // A batch of up to 8 one-segment buffers (a refill, a transmit burst): as
      // many as asked, the ring and the source allow; a 0-byte one ends it
      // unposted; nothing on a broken queue.
      let want = Int(input.u8() % 9)
      let free = q.freeCount
      var handed = 0
      var zero = false
      let added = q.add(upTo: want) {
        guard input.u8() != 0 else { return nil }
        handed += 1
        let len = input.bool() ? UInt32(input.u16()) : 0
        let writable = input.bool()
        let token = oracle.token()
        if len == 0 { zero = true } else { oracle.added(token, writable: writable ? len : 0) }
        return (BufferSegment(address: input.u64(), length: len, deviceWritable: writable), token)
      }
      require(added == handed - (zero ? 1 : 0), "add(upTo:) said \(added) of \(handed) handed over (a 0-byte one: \(zero))")
      require(added <= want && added <= free, "add(upTo:) added \(added), asked \(want) with \(free) free")
      require(!wasBroken || added == 0, "add(upTo:) added \(added) to a broken queue")
    case 0:
      // One segment; length 0 must be refused.
      let len = UInt32(input.u16())
      let writable = input.bool()
      let token = oracle.token()
      let r = q.add(BufferSegment(address: input.u64(), length: len, deviceWritable: writable), token: token)
      check(r, q: q, wasBroken: wasBroken)
      if r == .invalidChain { require(len == 0, "a one-segment buffer of \(len) bytes refused as invalid") }
      if r == .added { oracle.added(token, writable: writable ? len : 0) }
    case 1:
      // A chain of up to 2 × size + 1 segments (longer than the queue allows, at times).
      let n = Int(input.u8()) % (2 * q.size + 2)
      let mask = input.u64()
      var segs: [BufferSegment] = []
      var writable: UInt32 = 0
      var overflow = false
      var zero = false
      for i in 0..<n {
        // Large lengths now and then, so the writable sum can overflow.
        let len = input.bool() ? input.u32() : UInt32(input.u8())
        let w = (mask >> UInt64(i % 64)) & 1 != 0
        if len == 0 { zero = true }
        if w {
          let (s, o) = writable.addingReportingOverflow(len)
          writable = s
          overflow = overflow || o
        }
        segs.append(BufferSegment(address: UInt64(i) << 12, length: len, deviceWritable: w))
      }
      let token = oracle.token()
      let r = q.add(segs.span, token: token)
      check(r, q: q, wasBroken: wasBroken)
      if r == .added {
        require(n > 0 && !zero && !overflow, "chain of \(n) (zero length: \(zero), writable overflow: \(overflow)) accepted")
        oracle.added(token, writable: writable)
      }
    case 2:
      _ = q.publish()
    case 3:
      poll(q.nextUsed(), q: q, oracle: &oracle)
    case 4:
      poll(q.nextCompleted(), q: q, oracle: &oracle)
    default:
      if input.bool() { q.disableInterrupts() } else { _ = q.enableInterrupts() }
    }
    if !q.isBroken {
      require(q.inFlight == oracle.inFlight, "queue says \(q.inFlight) in flight, the driver posted \(oracle.inFlight)")
      require(q.freeCount >= 0 && q.freeCount <= q.size, "free count \(q.freeCount) outside 0…\(q.size)")
    }
    require(!wasBroken || q.isBroken, "a broken queue became unbroken")
  }

  static func check<Q: Virtqueue & ~Copyable>(_ r: AddResult, q: borrowing Q, wasBroken: Bool) {
    require((r == .broken) == wasBroken, "add returned \(r) on a queue that is \(wasBroken ? "" : "not ")broken")
  }

  /// Checks a poll result; returns true when a buffer came back.
  @discardableResult
  public static func poll<Q: Virtqueue & ~Copyable>(_ r: PollResult, q: borrowing Q, oracle: inout RingOracle) -> Bool {
    switch r {
    case .empty:
      require(!q.isBroken, "a broken queue answered empty")
      return false
    case .broken:
      require(q.brokenReason != nil, "nextUsed said broken without a reason")
      return false
    case .used(let u):
      require(!q.isBroken, "a broken queue returned a buffer")
      oracle.returned(u)
      return true
    }
  }
}
