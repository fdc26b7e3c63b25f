import VirtioCore
import VirtioSpec

/// The chain a device ring is taking, written once for both layouts: its
/// segments in a table allocated once (valid until the next chain), their
/// byte counts, the memory every address is translated through, and the
/// first driver bug the ring met (after which the ring takes nothing more).
struct ChainScratch: ~Copyable {
  let table: UnsafeMutablePointer<DeviceSegment>
  /// Most elements one chain may have.
  let limit: Int
  let memory: SimIOMMU
  var count = 0
  var readable: UInt64 = 0
  var writable: UInt64 = 0
  /// Segments of the chain last handed out (`segment(_:)` reads them).
  var handedOut = 0
  var driverBug: DriverBug? = nil

  init(limit: Int, memory: SimIOMMU) {
    self.limit = limit
    self.memory = memory
    // SAFETY: device-private scratch for one chain, freed in deinit.
    table = .allocate(capacity: limit)
  }

  deinit { table.deallocate() }

  /// A new chain: nothing taken yet.
  mutating func start() {
    count = 0
    readable = 0
    writable = 0
  }

  /// One buffer element: readable ones before writable ones (§2.7.4.2,
  /// §2.8.4), every byte translated, the chain within `limit` and 4 GiB.
  /// Recorded; or the bug that it is not.
  mutating func add(addr: UInt64, len: UInt32, flags: UInt16) -> DriverBug? {
    guard count < limit else { return .chainTooLong(limit: limit) }
    let isWritable = flags & VirtqDescFlags.write != 0
    if !isWritable && writable > 0 { return .readableAfterWritable }
    guard let p = memory.translate(addr, count: Int(len)) else { return .unknownAddress(area: .buffer, iova: addr, length: UInt64(len)) }
    table[count] = DeviceSegment(iova: addr, pointer: p, length: len, isWritable: isWritable)
    count &+= 1
    if isWritable { writable &+= UInt64(len) } else { readable &+= UInt64(len) }
    guard readable &+ writable <= UInt64(UInt32.max) else { return .chainTooLarge }
    return nil
  }

  /// Records the first driver bug; the chain is not handed out.
  mutating func fail(_ bug: DriverBug) -> DeviceChain? {
    if driverBug == nil { driverBug = bug }
    handedOut = 0
    return nil
  }

  /// Hands the chain out as taken.
  mutating func finish(id: UInt16, descriptors: Int, indirect: Bool) -> DeviceChain {
    handedOut = count
    return DeviceChain(
      id: id, descriptorCount: descriptors, segmentCount: count, readableBytes: UInt32(readable),
      writableBytes: UInt32(writable), isIndirect: indirect)
  }

  func segment(_ index: Int) -> DeviceSegment {
    precondition(index >= 0 && index < handedOut, "segment \(index) of a chain with \(handedOut)")
    return table[index]
  }
}
