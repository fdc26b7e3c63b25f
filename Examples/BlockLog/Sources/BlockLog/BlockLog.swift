import BlockIO

/// A record as stored: its sequence number and payload.
public struct LogRecord: Equatable, Sendable {
  public var sequence: UInt64
  public var payload: [UInt8]
}

/// What opening found.
public struct RecoveryReport: Equatable, Sendable {
  /// Intact records, 1...records.
  public var records: UInt64
  /// The first free block: where the next append goes.
  public var tailBlock: UInt64
  /// Why the scan stopped there.
  public var reason: String
}

/// An append-only log of checksummed records on a block device, embedding
/// BlockIO: the same code runs on a virtio-blk function driven from this
/// process over VFIO (`pci:…`) or on a kernel device or file (io_uring).
///
///     try BlockLog.format(device)
///     var log = try BlockLog(opening: device)        // recovers: finds the tail
///     let seq = try log.append(Array("hello".utf8))  // staged in DMA memory
///     try log.commit()                               // written + flushed: durable
///
/// Appends are staged in a DMA buffer and written together by `commit()` (a
/// group commit: one write, one flush). Records never straddle a commit's
/// blocks with another's, so a crash loses at most the commit in flight,
/// which recovery then cuts off. See `Layout` for the format.
public struct BlockLog: ~Copyable {
  var queue: BlockQueue
  var pool: BlockBufferPool
  let staging: BlockBuffer
  let chunk: BlockBuffer
  public let blockSize: Int
  /// Blocks on the device.
  let capacityBlocks: UInt64
  let logID: UInt64
  let epoch: UInt32
  let flushes: Bool
  /// The sequence number the next append gets.
  public private(set) var nextSequence: UInt64
  /// First block not yet written (staged records go here on commit).
  var tail: UInt64
  var staged = 0
  public let recovery: RecoveryReport

  /// Writes an empty log (a new superblock with a fresh id) and makes it durable.
  public static func format(_ device: borrowing BlockDevice, queue index: Int = 0) throws(BlockLogError) {
    let info = device.info
    guard !info.readOnly else { throw BlockLogError.device("\(info.target) is read-only") }
    var q = try open(device, index)
    var pool = try makePool(device, 1, info.logicalBlockSize * 2)
    let b = pool.allocate()!
    let bs = info.logicalBlockSize
    Layout.Superblock(blockSize: UInt32(bs), logID: UInt64.random(in: 1...UInt64.max), epoch: 1).write(to: b.pointer, blockSize: bs)
    // Block 1 zeroed as well, so nothing of an earlier log sits where the first record goes.
    (b.pointer + bs).initializeMemory(as: UInt8.self, repeating: 0, count: bs)
    try q.perform(BlockRequest(op: .write, offset: 0, length: 2 * bs, buffer: b, tag: 0))
    if info.supportsFlush { try q.perform(BlockRequest(op: .flush, offset: 0, length: 0, buffer: nil, tag: 1)) }
  }

  /// Opens the log on `device` and recovers it: reads the superblock, raises
  /// its epoch durably, and scans the records to find the tail.
  public init(opening device: borrowing BlockDevice, queue index: Int = 0, stagingBytes: Int = 64 << 10) throws(BlockLogError) {
    let info = device.info
    let bs = info.logicalBlockSize
    let size = max(bs * 2, stagingBytes / bs * bs)
    var q = try Self.open(device, index)
    var pool = try Self.makePool(device, 2, size)
    let staging = pool.allocate()!
    let chunk = pool.allocate()!
    try q.perform(BlockRequest(op: .read, offset: 0, length: bs, buffer: chunk, tag: 0))
    guard let sb = Layout.Superblock.read(chunk.pointer) else {
      throw BlockLogError.notALog("\(info.target) holds no block log (no valid superblock in block 0); format it first")
    }
    guard Int(sb.blockSize) == bs else {
      throw BlockLogError.notALog("the log was formatted with \(sb.blockSize)-byte blocks; \(info.target) has \(bs)")
    }
    let flushes = info.supportsFlush && !info.readOnly
    var newEpoch = sb.epoch
    if !info.readOnly {
      // The new epoch is durable before any record of it is written.
      newEpoch = sb.epoch &+ 1
      Layout.Superblock(blockSize: sb.blockSize, logID: sb.logID, epoch: newEpoch).write(to: staging.pointer, blockSize: bs)
      try q.perform(BlockRequest(op: .write, offset: 0, length: bs, buffer: staging, tag: 0))
      if flushes { try q.perform(BlockRequest(op: .flush, offset: 0, length: 0, buffer: nil, tag: 0)) }
    }
    let capacity = info.capacityBytes / UInt64(bs)
    let report = try Self.scan(&q, chunk: chunk, blockSize: bs, capacity: capacity, logID: sb.logID) { _, _ in }
    self.queue = q
    self.pool = pool
    self.staging = staging
    self.chunk = chunk
    self.blockSize = bs
    self.capacityBlocks = capacity
    self.logID = sb.logID
    self.epoch = newEpoch
    self.flushes = flushes
    self.nextSequence = report.records + 1
    self.tail = report.tailBlock
    self.recovery = report
  }

  /// Stages a record; returns its sequence number. It is durable after `commit()`.
  public mutating func append(_ payload: [UInt8]) throws(BlockLogError) -> UInt64 {
    let need = Layout.blocks(forPayload: payload.count, blockSize: blockSize) * blockSize
    guard need <= staging.capacity else {
      throw BlockLogError.tooLarge("a \(payload.count)-byte record needs \(need) bytes; the staging buffer holds \(staging.capacity)")
    }
    if staged + need > staging.capacity { try commit() }
    let firstBlock = tail + UInt64(staged / blockSize)
    guard firstBlock + UInt64(need / blockSize) <= capacityBlocks else {
      throw BlockLogError.full("the log is full: \(capacityBlocks) blocks, the record needs \(need / blockSize) more")
    }
    let seq = nextSequence
    _ = payload.withUnsafeBytes { p in
      Layout.writeRecord(staging.pointer + staged, payload: p, logID: logID, sequence: seq, epoch: epoch, blockSize: blockSize)
    }
    staged += need
    nextSequence += 1
    return seq
  }

  /// Writes the staged records in one request, then flushes: when this
  /// returns, every record appended so far survives a crash.
  public mutating func commit() throws(BlockLogError) {
    guard staged > 0 else { return }
    let offset = tail * UInt64(blockSize)
    try queue.perform(BlockRequest(op: .write, offset: offset, length: staged, buffer: staging, tag: 0))
    if flushes { try queue.perform(BlockRequest(op: .flush, offset: 0, length: 0, buffer: nil, tag: 0)) }
    tail += UInt64(staged / blockSize)
    staged = 0
  }

  /// Every committed record, read back from the device and checked again.
  public mutating func records() throws(BlockLogError) -> [LogRecord] {
    var out: [LogRecord] = []
    _ = try Self.scan(&queue, chunk: chunk, blockSize: blockSize, capacity: tail, logID: logID) { seq, bytes in
      out.append(LogRecord(sequence: seq, payload: Array(bytes)))
    }
    return out
  }

  /// Counters of the queue underneath (requests, bytes, flushes, ...).
  public var stats: BlockQueueStats { queue.stats }

  // MARK: recovery

  /// Reads records from block 1 while they are intact (see `Layout`), calling
  /// `visit` for each; the report says where and why the scan stopped.
  static func scan(
    _ q: inout BlockQueue, chunk: BlockBuffer, blockSize bs: Int, capacity: UInt64, logID: UInt64,
    _ visit: (UInt64, UnsafeRawBufferPointer) -> Void
  ) throws(BlockLogError) -> RecoveryReport {
    let chunkBlocks = UInt64(chunk.capacity / bs)
    var block: UInt64 = 1
    var sequence: UInt64 = 1
    var minEpoch: UInt32 = 0
    while true {
      guard block < capacity else { return RecoveryReport(records: sequence - 1, tailBlock: block, reason: "end of the device") }
      let n = min(chunkBlocks, capacity - block)
      try q.perform(BlockRequest(op: .read, offset: block * UInt64(bs), length: Int(n) * bs, buffer: chunk, tag: 0))
      var at: UInt64 = 0
      while at < n {
        let p = chunk.pointer + Int(at) * bs
        guard let h = Layout.readHeader(p, logID: logID, sequence: sequence, minEpoch: minEpoch, maxPayload: chunk.capacity - Layout.recordHeader)
        else {
          return RecoveryReport(records: sequence - 1, tailBlock: block + at, reason: "no record \(sequence) at block \(block + at)")
        }
        let blocks = UInt64(Layout.blocks(forPayload: h.length, blockSize: bs))
        if at + blocks > n {
          if block + at + blocks > capacity {
            return RecoveryReport(records: sequence - 1, tailBlock: block + at, reason: "record \(sequence) runs past the end of the device")
          }
          break  // read again from this record
        }
        guard Layout.checksumMatches(p, length: h.length) else {
          return RecoveryReport(records: sequence - 1, tailBlock: block + at, reason: "record \(sequence) at block \(block + at) is torn (CRC-32C mismatch)")
        }
        visit(sequence, UnsafeRawBufferPointer(start: p + Layout.recordHeader, count: h.length))
        sequence += 1
        minEpoch = h.epoch
        at += blocks
      }
      block += at
    }
  }

  static func open(_ device: borrowing BlockDevice, _ index: Int) throws(BlockLogError) -> BlockQueue {
    do {
      return try device.makeQueue(index)
    } catch {
      throw BlockLogError.device(error.message)
    }
  }

  static func makePool(_ device: borrowing BlockDevice, _ count: Int, _ size: Int) throws(BlockLogError) -> BlockBufferPool {
    do {
      return try device.makeBufferPool(count: count, bufferSize: size)
    } catch {
      throw BlockLogError.device(error.message)
    }
  }
}
