/// Completion latencies of one queue in fixed power-of-two buckets, for a
/// monitoring thread to read (`BlockStatsBoard`) and an exporter to publish as
/// a Prometheus histogram. Recording is a handful of plain integer operations:
/// no allocation, safe on the submit/complete path.
@frozen public struct BlockLatencyHistogram: BitwiseCopyable, Sendable, Equatable {
  /// Buckets 0 ..< bucketCount - 1 hold latencies up to 2^i µs (1 µs ... 2^24 µs, about 16.8 s);
  /// the last one holds everything above (+Inf).
  public static let bucketCount = 26
  /// Per bucket, not cumulative.
  public var buckets: InlineArray<26, UInt64>
  public var count: UInt64
  public var sumNanoseconds: UInt64

  public init() {
    buckets = InlineArray(repeating: 0)
    count = 0
    sumNanoseconds = 0
  }

  /// The bucket of a latency: the smallest i with nanoseconds <= 2^i µs (the last bucket past that).
  @inlinable public static func bucket(nanoseconds: UInt64) -> Int {
    let micros = nanoseconds / 1000 &+ (nanoseconds % 1000 == 0 ? 0 : 1)  // rounded up
    let i = micros <= 1 ? 0 : 64 &- (micros &- 1).leadingZeroBitCount
    return min(i, bucketCount &- 1)
  }

  @inlinable public mutating func record(nanoseconds: UInt64) {
    buckets[Self.bucket(nanoseconds: nanoseconds)] &+= 1
    count &+= 1
    sumNanoseconds &+= nanoseconds
  }

  public static func == (a: Self, b: Self) -> Bool {
    guard a.count == b.count && a.sumNanoseconds == b.sumNanoseconds else { return false }
    for i in 0..<bucketCount where a.buckets[i] != b.buckets[i] { return false }
    return true
  }

  /// Upper bound of bucket `i` in nanoseconds; nil for the last (+Inf).
  public static func upperBoundNanoseconds(_ i: Int) -> UInt64? {
    i >= 0 && i < bucketCount - 1 ? UInt64(1000) << UInt64(i) : nil
  }
}

/// What one queue publishes for monitoring: its counters and its completion
/// latencies by operation (reads, writes, and the rest: flush, discard, write-zeroes).
@frozen public struct BlockQueueMetrics: BitwiseCopyable, Sendable, Equatable {
  public var stats = BlockQueueStats()
  public var readLatency = BlockLatencyHistogram()
  public var writeLatency = BlockLatencyHistogram()
  public var otherLatency = BlockLatencyHistogram()

  public init() {}

  /// Records one completion's latency under its operation.
  @inlinable public mutating func recordLatency(_ op: BlockOperation, nanoseconds: UInt64) {
    switch op {
    case .read: readLatency.record(nanoseconds: nanoseconds)
    case .write: writeLatency.record(nanoseconds: nanoseconds)
    default: otherLatency.record(nanoseconds: nanoseconds)
    }
  }
}
