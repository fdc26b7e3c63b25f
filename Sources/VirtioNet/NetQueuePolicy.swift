/// How a `NetQueuePair` paces its doorbells and its buffer recycling: the
/// knobs of issue 17's notification study (docs/PERFORMANCE.md, "Issue 17:
/// notification strategy study"). The default is the policy that study kept;
/// the others are for users who have measured their own device.
///
/// Read once per burst from stored constants: no cost on the hot path beyond a
/// compare. Values are clamped to what the rings allow when the pair is made
/// (`NetQueuePair.init`), so no setting can stall a queue or trap.
public struct NetQueuePolicy: Sendable, Equatable {
  /// Refill the RX ring once at least this many of its slots are free (one
  /// publish and at most one doorbell per refill, §2.7.13 / §2.8.21). nil: an
  /// eighth of the ring, 1 ... 32. Clamped to 1 ... ring size.
  public var rxRefillThreshold: Int?
  /// `transmit` reclaims finished TX buffers only when fewer than this many
  /// ring slots are free (the device's used entries are then read in larger
  /// batches). nil: on every call. Clamped to 1 ... ring size, so a full ring
  /// is always reclaimed.
  public var txReclaimBelow: Int?
  /// A TX doorbell the device asked for (EVENT_IDX's avail_event or NO_NOTIFY
  /// clear, §2.7.10 / §2.8.10) is rung only once this many packets were
  /// published since the last one — or at once when a call posts nothing or
  /// leaves the ring full, or at `flushTransmit`. 1: every call that posts
  /// rings what the device asked for (the default). Clamped to 1 ... ring size.
  public var txKickBatch: Int

  public init(rxRefillThreshold: Int? = nil, txReclaimBelow: Int? = nil, txKickBatch: Int = 1) {
    self.rxRefillThreshold = rxRefillThreshold
    self.txReclaimBelow = txReclaimBelow
    self.txKickBatch = txKickBatch
  }

  /// Today's behaviour, kept by the study (see the type's comment).
  public static var standard: NetQueuePolicy { NetQueuePolicy() }

  /// The RX refill threshold for a ring of `ringSize` slots.
  public func refillThreshold(ringSize: Int) -> Int {
    let size = max(1, ringSize)
    return max(1, min(rxRefillThreshold ?? min(32, size / 8), size))
  }

  /// Free TX slots below which `transmit` reclaims (Int.max: always).
  public func reclaimBelow(ringSize: Int) -> Int {
    guard let n = txReclaimBelow else { return Int.max }
    return max(1, min(n, max(1, ringSize)))
  }

  /// Packets per TX doorbell for a ring of `ringSize` slots.
  public func kickBatch(ringSize: Int) -> Int { max(1, min(txKickBatch, max(1, ringSize))) }

  /// The settings that differ from the default, as `name=value` words (logs, reports).
  public var summary: String {
    var words: [String] = []
    if let n = rxRefillThreshold { words.append("rx-refill=\(n)") }
    if let n = txReclaimBelow { words.append("tx-reclaim-below=\(n)") }
    if txKickBatch != 1 { words.append("tx-kick-batch=\(txKickBatch)") }
    return words.isEmpty ? "default" : words.joined(separator: " ")
  }
}
