import PacketIO

/// The example packet app: a reflector. Every frame received on a port goes
/// back out of the same port with its source and destination MAC addresses
/// swapped (testpmd's macswap), one worker over queue 0 of every port. It
/// shows what `import PacketIO` alone gives an app: open ports, move bursts
/// without copying, count drops, read counters, and catch errors.
public struct Relay: ~Copyable {
  public var group: PortGroup
  /// One burst of handles, allocated once: the loop allocates nothing.
  var burst: PacketBurst
  /// Frames received, sent back and dropped (TX ring still full after retries) so far.
  public private(set) var counts = RelayCounts()

  /// Opens `ports` ("pci:0000:00:04.0", "vhost-user:/tmp/net.sock", "eth1").
  public init(ports: [String], options: PortOptions = PortOptions(), burst: Int = 32) throws(VirtioError) {
    var addresses: [PortAddress] = []
    for p in ports { addresses.append(try PortAddress(parsing: p)) }
    self.init(group: try PortGroup.open(addresses, options: options), burst: burst)
  }

  /// Runs over a group opened elsewhere (`PortGroup.open(transport:)` for a simulated device).
  public init(group: consuming PortGroup, burst: Int = 32) {
    let largest = group.ports.map(\.maxBurst).min() ?? burst
    self.group = group
    self.burst = PacketBurst(capacity: min(burst, largest))
  }

  /// Reflects frames until `stop` says so (asked once per round with the
  /// counts so far); the counters of every port at the end. Throws when a
  /// device breaks a queue (it wrote something it never could have).
  public mutating func run(until stop: (RelayCounts) -> Bool) throws(VirtioError) -> [NetQueueStats] {
    var queues = WorkerQueues(capacity: group.count)
    for port in 0..<group.count { queues.append(group.takeQueue(port: port, queue: 0)) }
    var pool = try group.makeBufferPool(count: group.poolSize(burst: burst.capacity))
    for i in 0..<queues.count { queues[i].start(pool: &pool) }
    var rounds = 0
    while !stop(counts) {
      for i in 0..<queues.count {
        try reflect(&queues[i], &pool)
        if rounds & 63 == 0 { queues[i].publishStats() }
      }
      rounds &+= 1
    }
    for i in 0..<queues.count { queues[i].publishStats() }
    return (0..<group.count).map { group.stats(port: $0) }
  }

  /// One burst: receive, swap the addresses in place, send back what the ring takes, drop the rest.
  mutating func reflect(_ q: inout PortQueue, _ pool: inout BufferPool) throws(VirtioError) {
    let received = burst.receive(from: &q, pool: &pool)
    if received == 0 {
      if let why = q.brokenReason { throw VirtioError(.queueBroken, "port \(q.port) queue \(q.queue) stopped: \(why)") }
      q.flush(pool: &pool)
      return
    }
    for i in 0..<received where burst[i].length >= 12 {
      let frame = pool.data(burst[i])
      for j in 0..<6 { frame.swapAt(j, 6 + j) }
    }
    // A full TX ring gets a few chances to drain (finished buffers reclaimed), as vio-fwd's --tx-retries.
    var sent = 0
    for _ in 0..<8 where !burst.isEmpty {
      sent += burst.transmit(to: &q, pool: &pool)
      if !burst.isEmpty { q.flush(pool: &pool) }
    }
    burst.drop(on: &q, pool: &pool)
    counts.received += received
    counts.sent += sent
    counts.dropped += received - sent
  }
}

/// What a relay has done so far.
public struct RelayCounts: Sendable, Equatable {
  public var received = 0
  public var sent = 0
  public var dropped = 0
}
