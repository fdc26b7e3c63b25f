import PacketIO

/// Forwards port A's frames out of port B until Ctrl-C, then prints A's counters.
func forward(from a: String, to b: String) {
  StopSignal.install()
  do throws(VirtioError) {
    var group = try PortGroup.open([PortAddress(parsing: a), PortAddress(parsing: b)], options: PortOptions())
    var rx = group.takeQueue(port: 0, queue: 0)
    var tx = group.takeQueue(port: 1, queue: 0)
    var pool = try group.makeBufferPool(count: group.poolSize(burst: 32))
    rx.start(pool: &pool)
    tx.start(pool: &pool)
    var burst = PacketBurst(capacity: 32)
    while !StopSignal.requested {
      burst.receive(from: &rx, pool: &pool)
      burst.transmit(to: &tx, pool: &pool)
      burst.drop(on: &tx, pool: &pool)  // a full TX ring: back to the pool, counted
      if let why = rx.brokenReason { throw VirtioError(.queueBroken, "\(a): \(why)") }
    }
    rx.publishStats()
    print("\(a): \(group.stats(port: 0).rxPackets) packets received")
  } catch {
    print("forward: \(error.message)")  // says what happened and what to do
  }
}
