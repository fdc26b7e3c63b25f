import BlockIO
import Glibc
import VirtioBlk
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// BlockRequestQueue against a simulated virtio-blk device on its own thread.
/// Every test body runs on split and packed rings.
final class BlockRequestQueueTests: XCTestCase {
  let ringVariants: [[Int]] = [[], [VirtioFeature.eventIdx, VirtioFeature.indirectDesc]]

  func testConfigAndNegotiation() throws {
    var c = SimBlockConfig()
    c.capacity = 4096
    c.segMax = 8
    c.sizeMax = 8192
    c.blkSize = 4096
    c.numQueues = 3
    c.maxDiscardSectors = 64
    let features = [
      BlockFeature.segMax, BlockFeature.sizeMax, BlockFeature.blkSize, BlockFeature.mq, BlockFeature.flush, BlockFeature.discard,
      BlockFeature.ro, BlockFeature.geometry,
    ]
    let r = try BlkRig<SplitVirtqueue>(features: features, config: c)
    XCTAssertEqual(r.config.capacitySectors, 4096)
    XCTAssertEqual(r.config.capacityBytes, 4096 * 512)
    XCTAssertEqual(r.config.blockSize, 4096)
    XCTAssertEqual(r.config.segmentsMax, 8)
    XCTAssertEqual(r.config.segmentSizeMax, 8192)
    XCTAssertEqual(r.config.numQueues, 3)
    XCTAssertTrue(r.config.readOnly)
    XCTAssertTrue(r.config.supportsFlush)
    XCTAssertTrue(r.config.supportsDiscard)
    XCTAssertFalse(r.config.supportsWriteZeroes)
    XCTAssertEqual(r.config.maxDiscardSectors, 64)
    XCTAssertFalse(r.negotiated.contains(bit: BlockFeature.geometry), "GEOMETRY is not asked for")
    XCTAssertEqual(r.q0.maxDataSegments, 8)
    XCTAssertEqual(r.q0.maxRequestBytes, 64 * 1024, "SEG_MAX × SIZE_MAX")
    XCTAssertEqual(r.t.protocolViolations, [])
  }

  func testConfigDefaultsWithoutFeatures() throws {
    var c = SimBlockConfig()
    c.blkSize = 4096
    c.segMax = 50
    c.numQueues = 4
    let r = try BlkRig<SplitVirtqueue>(config: c)
    XCTAssertEqual(r.config.blockSize, 512, "BLK_SIZE not negotiated: 512")
    XCTAssertNil(r.config.segmentsMax)
    XCTAssertEqual(r.config.numQueues, 1)
    XCTAssertFalse(r.config.supportsFlush)
    XCTAssertEqual(r.q0.maxDataSegments, 1, "no SEG_MAX: one data segment per request, as Linux assumes")
  }

  func testWriteThenReadBack() throws {
    for f in ringVariants {
      try writeRead(SplitVirtqueue.self, f)
      try writeRead(PackedVirtqueue.self, f)
    }
  }

  func writeRead<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type, _ f: [Int]) throws {
    var r = try BlkRig<Q>(features: f + [BlockFeature.segMax], config: SimBlockConfig(segMax: 16), maxIndirect: 8)
    let name = "\(Q.self) \(f)"
    fill(r.pointer(0), 8192, seed: 3)
    let (w, wc) = r.io(.write, sector: 100, offset: 0, length: 8192, tag: 41)
    XCTAssertEqual(w, .queued, name)
    XCTAssertEqual(wc, BlockCompletion(tag: 41, op: .write, status: .ok, bytes: 8192), name)
    XCTAssertEqual(r.disk.bytes(at: 100 * 512, count: 8192), bytes(r.pointer(0), 8192), name)
    let (rd, rc) = r.io(.read, sector: 100, offset: 65536, length: 8192, tag: 42)
    XCTAssertEqual(rd, .queued, name)
    XCTAssertEqual(rc, BlockCompletion(tag: 42, op: .read, status: .ok, bytes: 8192), name)
    XCTAssertEqual(bytes(r.pointer(65536), 8192), bytes(r.pointer(0), 8192), name)
    // Untouched neighbours keep their pattern.
    XCTAssertEqual(r.disk.bytes(at: 99 * 512, count: 1).first, SimBlockDisk.pattern(sector: 99, byte: 0), name)
    XCTAssertEqual(r.q0.stats.requests, 2, name)
    XCTAssertEqual(r.q0.stats.bytes, 16384, name)
    XCTAssertEqual(r.q0.stats.errors, 0, name)
    XCTAssertEqual(r.q0.inFlight, 0, name)
    XCTAssertEqual(r.disk.protocolErrors, [], name)
    XCTAssertEqual(r.device.driverBugs.count, 0, name)
  }

  /// A full queue of reads in one batch, every one checked against the disk.
  func testBatchOfReads() throws {
    try batch(SplitVirtqueue.self)
    try batch(PackedVirtqueue.self)
  }

  func batch<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type) throws {
    var r = try BlkRig<Q>(features: [VirtioFeature.eventIdx], queueSize: 16)
    for round in 0..<50 {
      var n = 0
      while true {
        let res = r.q0.submit(.read, sector: UInt64(n * 3 + round), address: r.iova(n * 512), length: 512, tag: UInt64(n))
        if res == .queueFull { break }
        XCTAssertEqual(res, .queued)
        n += 1
      }
      XCTAssertEqual(n, 5, "16 descriptors / 3 per direct chain")
      r.q0.kick()
      let done = r.wait(n)
      XCTAssertEqual(done.count, n, "\(Q.self) round \(round): \(r.q0.brokenReason.map { "\($0)" } ?? "stalled")")
      for c in done {
        XCTAssertEqual(c.status, .ok)
        let s = Int(c.tag) * 3 + round
        XCTAssertEqual(r.pointer(Int(c.tag) * 512).load(fromByteOffset: 1, as: UInt8.self), SimBlockDisk.pattern(sector: s, byte: 1))
      }
    }
    XCTAssertGreaterThan(r.q0.stats.queueFull, 0)
  }

  func testVectoredRequestAndLimits() throws {
    try vectored(SplitVirtqueue.self)
    try vectored(PackedVirtqueue.self)
  }

  func vectored<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type) throws {
    var c = SimBlockConfig()
    c.segMax = 3
    c.sizeMax = 4096
    var r = try BlkRig<Q>(features: [BlockFeature.segMax, BlockFeature.sizeMax], config: c, queueSize: 16)
    fill(r.pointer(0), 3 * 4096, seed: 9)
    let segs: [BufferSegment] = [.readable(r.iova(0), 4096), .readable(r.iova(4096), 1024), .readable(r.iova(5120), 3072)]
    XCTAssertEqual(r.q0.submit(.write, sector: 8, segments: segs.span, tag: 1), .queued)
    r.q0.kick()
    XCTAssertEqual(r.wait(1).first?.bytes, 8192)
    XCTAssertEqual(r.disk.requests.last?.dataSegments, 3)
    XCTAssertEqual(r.disk.bytes(at: 8 * 512, count: 8192), bytes(r.pointer(0), 8192))
    let four: [BufferSegment] = Array(repeating: .readable(r.iova(0), 512), count: 4)
    XCTAssertEqual(r.q0.submit(.write, sector: 0, segments: four.span, tag: 2), .tooManySegments)
    let big: [BufferSegment] = [.readable(r.iova(0), 8192)]
    XCTAssertEqual(r.q0.submit(.write, sector: 0, segments: big.span, tag: 3), .segmentTooLarge)
    XCTAssertEqual(r.disk.requests.count, 1, "refused requests never reach the device")
  }

  /// A contiguous transfer larger than SEG_MAX × SIZE_MAX goes out as several
  /// requests and comes back as one completion.
  func testLargeIOSplit() throws {
    try largeSplit(SplitVirtqueue.self, [])
    try largeSplit(PackedVirtqueue.self, [VirtioFeature.indirectDesc])
  }

  func largeSplit<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type, _ f: [Int]) throws {
    var c = SimBlockConfig()
    c.segMax = 4
    c.sizeMax = 4096
    var r = try BlkRig<Q>(features: f + [BlockFeature.segMax, BlockFeature.sizeMax], config: c, queueSize: 64, maxIndirect: 8)
    XCTAssertEqual(r.q0.maxRequestBytes, 16384)
    fill(r.pointer(0), 65536 + 1024, seed: 5)
    let (w, wc) = r.io(.write, sector: 32, offset: 0, length: 65536 + 1024, tag: 99)
    XCTAssertEqual(w, .queued)
    XCTAssertEqual(wc, BlockCompletion(tag: 99, op: .write, status: .ok, bytes: 65536 + 1024))
    let reqs = r.disk.requests
    XCTAssertEqual(reqs.count, 5, "4 × 16 KiB + 1 KiB")
    XCTAssertEqual(reqs.map(\.sector), [32, 64, 96, 128, 160])
    XCTAssertEqual(reqs.map(\.dataSegments), [4, 4, 4, 4, 1])
    XCTAssertTrue(reqs.allSatisfy { $0.dataBytes <= 16384 })
    XCTAssertEqual(r.disk.bytes(at: 32 * 512, count: 65536 + 1024), bytes(r.pointer(0), 65536 + 1024))
    XCTAssertEqual(r.q0.stats.splits, 1)
    XCTAssertEqual(r.q0.stats.requests, 5)
    // Read it back in one call.
    let (rd, rc) = r.io(.read, sector: 32, offset: 1 << 20, length: 65536 + 1024, tag: 100)
    XCTAssertEqual(rd, .queued)
    XCTAssertEqual(rc?.bytes, 65536 + 1024)
    XCTAssertEqual(bytes(r.pointer(1 << 20), 65536 + 1024), bytes(r.pointer(0), 65536 + 1024))
    XCTAssertEqual(r.q0.inFlight, 0)
  }

  /// Issue 13: qemu-storage-daemon's vhost-user-blk export offers SIZE_MAX with
  /// size_max 0 and SEG_MAX 126. 0 is no limit (Linux, QEMU): it was read as
  /// 512-byte segments, so every request above 63 KiB was refused (SEG_MAX) and
  /// maxTransferBytes read 0. Large I/O splits at maxTransferBytes instead.
  func testSizeMaxZeroIsNoLimit() throws {
    try sizeMaxZero(SplitVirtqueue.self, [])
    try sizeMaxZero(PackedVirtqueue.self, [VirtioFeature.indirectDesc])
  }

  func sizeMaxZero<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type, _ f: [Int]) throws {
    var c = SimBlockConfig()
    c.capacity = 8192
    c.segMax = 126
    c.sizeMax = 0
    var r = try BlkRig<Q>(
      features: f + [BlockFeature.segMax, BlockFeature.sizeMax, BlockFeature.blkSize], config: c, queueSize: 64, maxIndirect: 8,
      maxTransferBytes: 1 << 20)
    XCTAssertNil(r.config.segmentSizeMax, "size_max 0 is no limit")
    XCTAssertEqual(r.config.segmentsMax, 126)
    XCTAssertEqual(r.q0.maxRequestBytes, 1 << 20)
    let info = BlockDeviceInfo(
      virtio: r.config, target: "sim", queueCount: 1, queueDepth: 64, maxTransferBytes: 1 << 20, serial: nil, details: "")
    XCTAssertEqual(info.maxTransferBytes, 1 << 20)
    // 128 KiB: one request, one segment.
    fill(r.pointer(0), 128 << 10, seed: 3)
    let (w, wc) = r.io(.write, sector: 0, offset: 0, length: 128 << 10, tag: 1)
    XCTAssertEqual(w, .queued)
    XCTAssertEqual(wc?.status, .ok)
    XCTAssertEqual(r.disk.requests.map(\.dataSegments), [1])
    // 2 MiB + 4 KiB: split at 1 MiB into three requests, data intact.
    let big = (2 << 20) + 4096
    fill(r.pointer(0), big, seed: 4)
    let (w2, wc2) = r.io(.write, sector: 16, offset: 0, length: big, tag: 2)
    XCTAssertEqual(w2, .queued)
    XCTAssertEqual(wc2, BlockCompletion(tag: 2, op: .write, status: .ok, bytes: UInt32(big)))
    XCTAssertEqual(r.disk.requests.dropFirst().map(\.dataBytes), [1 << 20, 1 << 20, 4096])
    XCTAssertEqual(r.q0.stats.splits, 1)
    XCTAssertEqual(r.disk.bytes(at: 16 * 512, count: big), bytes(r.pointer(0), big))
  }

  func testSegMaxZeroIsOneSegment() throws {
    var c = SimBlockConfig()
    c.segMax = 0
    c.sizeMax = 0
    let r = try BlkRig<SplitVirtqueue>(features: [BlockFeature.segMax, BlockFeature.sizeMax], config: c, queueSize: 16)
    XCTAssertNil(r.config.segmentsMax)
    XCTAssertNil(r.config.segmentSizeMax)
    XCTAssertEqual(r.q0.maxDataSegments, 1)
    XCTAssertEqual(r.q0.maxRequestBytes, 1 << 20)
  }

  /// A split request goes in whole or not at all.
  func testSplitAllOrNothing() throws {
    var c = SimBlockConfig()
    c.segMax = 1
    c.sizeMax = 4096
    var r = try BlkRig<SplitVirtqueue>(features: [BlockFeature.segMax, BlockFeature.sizeMax], config: c, queueSize: 16)
    // 16 descriptors: 5 single-part requests leave 1 free; a 2-part request needs 6.
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 8192, tag: 1), .queued)
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 8192, tag: 2), .queued)
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 12288, tag: 3), .queueFull)
    XCTAssertEqual(r.q0.inFlight, 4, "nothing of the refused request was queued")
    // A request needing more descriptors than the ring has can never go in.
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 6 * 4096, tag: 4), .tooManySegments)
    r.q0.kick()
    let done = r.wait(2)
    XCTAssertEqual(done.map(\.tag).sorted(), [1, 2])
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 12288, tag: 3), .queued)
  }

  func testRefusedBeforeSubmission() throws {
    try refused(SplitVirtqueue.self)
    try refused(PackedVirtqueue.self)
  }

  func refused<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type) throws {
    var c = SimBlockConfig()
    c.capacity = 1024
    c.blkSize = 4096
    var r = try BlkRig<Q>(features: [BlockFeature.blkSize], config: c)
    let cap = UInt64(1024)
    XCTAssertEqual(r.q0.submit(.read, sector: cap, address: r.iova(0), length: 4096, tag: 0), .outOfRange)
    XCTAssertEqual(r.q0.submit(.read, sector: cap - 8, address: r.iova(0), length: 8192, tag: 0), .outOfRange)
    XCTAssertEqual(r.q0.submit(.read, sector: UInt64.max - 1, address: r.iova(0), length: 4096, tag: 0), .outOfRange)
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 512, tag: 0), .unaligned, "512 < BLK_SIZE 4096")
    XCTAssertEqual(r.q0.submit(.read, sector: 1, address: r.iova(0), length: 4096, tag: 0), .unaligned, "sector not on a 4 KiB boundary")
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 0, tag: 0), .unaligned)
    XCTAssertEqual(r.q0.submitFlush(tag: 0), .unsupportedOperation, "FLUSH not offered")
    XCTAssertEqual(r.q0.submitRange(.discard, sector: 0, sectors: 8, tag: 0), .unsupportedOperation)
    XCTAssertEqual(r.q0.submitRange(.writeZeroes, sector: 0, sectors: 8, tag: 0), .unsupportedOperation)
    XCTAssertEqual(r.q0.submit(.flush, sector: 0, address: r.iova(0), length: 512, tag: 0), .unsupportedOperation)
    XCTAssertEqual(r.q0.submit(.read, sector: cap - 8, address: r.iova(0), length: 4096, tag: 0), .queued, "the last block is fine")
    r.q0.kick()
    XCTAssertEqual(r.wait(1).first?.status, .ok)
    XCTAssertEqual(r.disk.requests.count, 1)
    XCTAssertEqual(r.q0.stats.requests, 1)
  }

  func testReadOnlyDeviceRefusesWrites() throws {
    var r = try BlkRig<PackedVirtqueue>(features: [BlockFeature.ro, BlockFeature.discard, BlockFeature.writeZeroes])
    XCTAssertTrue(r.config.readOnly)
    XCTAssertEqual(r.q0.submit(.write, sector: 0, address: r.iova(0), length: 512, tag: 0), .readOnlyDevice)
    let one: [BufferSegment] = [.readable(r.iova(0), 512)]
    XCTAssertEqual(r.q0.submit(.write, sector: 0, segments: one.span, tag: 0), .readOnlyDevice)
    XCTAssertEqual(r.q0.submitRange(.writeZeroes, sector: 0, sectors: 1, tag: 0), .readOnlyDevice)
    XCTAssertEqual(r.q0.submitRange(.discard, sector: 0, sectors: 1, tag: 0), .readOnlyDevice)
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 512, tag: 0), .queued, "reads still work")
    r.q0.kick()
    XCTAssertEqual(r.wait(1).first?.status, .ok)
    XCTAssertEqual(r.disk.requests.map(\.type), [BlockRequestType.read], "no write reached the device")
    XCTAssertEqual(r.q0.stats.requests, 1)
  }

  func testFlushGetIDDiscardWriteZeroes() throws {
    try otherOps(SplitVirtqueue.self)
    try otherOps(PackedVirtqueue.self)
  }

  func otherOps<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type) throws {
    var c = SimBlockConfig()
    c.maxDiscardSectors = 16
    c.maxWriteZeroesSectors = 64
    var r = try BlkRig<Q>(
      features: [BlockFeature.flush, BlockFeature.discard, BlockFeature.writeZeroes], config: c, queueSize: 32)
    XCTAssertEqual(r.q0.submitFlush(tag: 5), .queued)
    r.q0.kick()
    XCTAssertEqual(r.wait(1).first, BlockCompletion(tag: 5, op: .flush, status: .ok, bytes: 0))
    XCTAssertEqual(r.disk.requests.last?.type, BlockRequestType.flush)

    let id: [BufferSegment] = [.writable(r.iova(0), 20)]
    XCTAssertEqual(r.q0.submit(.getID, sector: 0, segments: id.span, tag: 6), .queued)
    r.q0.kick()
    XCTAssertEqual(r.wait(1).first, BlockCompletion(tag: 6, op: .getID, status: .ok, bytes: 20))
    XCTAssertEqual(Array(bytes(r.pointer(0), 11)), SimBlockDisk.serial)

    // Discard of 40 sectors with max_discard_sectors 16: three ranges, one completion.
    XCTAssertEqual(r.q0.submitRange(.discard, sector: 10, sectors: 40, tag: 7), .queued)
    r.q0.kick()
    XCTAssertEqual(r.wait(1).first, BlockCompletion(tag: 7, op: .discard, status: .ok, bytes: 0))
    let discards = r.disk.requests.filter { $0.type == BlockRequestType.discard }
    XCTAssertEqual(discards.map(\.sector), [10, 26, 42])
    XCTAssertEqual(discards.map(\.rangeSectors), [16, 16, 8])
    XCTAssertEqual(discards.map(\.rangeFlags), [0, 0, 0], "discard never sets UNMAP")
    XCTAssertEqual(r.disk.bytes(at: 10 * 512, count: 40 * 512), [UInt8](repeating: 0, count: 40 * 512))

    XCTAssertEqual(r.q0.submitRange(.writeZeroes, sector: 100, sectors: 8, unmap: true, tag: 8), .queued)
    r.q0.kick()
    XCTAssertEqual(r.wait(1).first?.status, .ok)
    XCTAssertEqual(r.disk.requests.last?.rangeFlags, 1, "UNMAP")
    // Read the zeroed range back through the queue.
    r.pointer(0).initializeMemory(as: UInt8.self, repeating: 0xEE, count: 4096)
    let (_, rc) = r.io(.read, sector: 100, offset: 0, length: 4096)
    XCTAssertEqual(rc?.status, .ok)
    XCTAssertEqual(bytes(r.pointer(0), 4096), [UInt8](repeating: 0, count: 4096))
    XCTAssertEqual(r.disk.bytes(at: 108 * 512, count: 1).first, SimBlockDisk.pattern(sector: 108, byte: 0), "no more than asked")
    XCTAssertEqual(r.q0.submitRange(.discard, sector: 2040, sectors: 16, tag: 0), .outOfRange)
    XCTAssertEqual(r.disk.protocolErrors, [])
  }

  /// IOERR, UNSUPP, an undefined status byte and a missing status are each
  /// surfaced on their request; the queue keeps working.
  func testStatusesSurfacePerRequest() throws {
    try statuses(SplitVirtqueue.self)
    try statuses(PackedVirtqueue.self)
  }

  func statuses<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type) throws {
    var r = try BlkRig<Q>(features: [BlockFeature.flush], queueSize: 32)
    r.disk.with { $0.failing = 40..<48 }
    for i in 0..<8 {
      XCTAssertEqual(r.q0.submit(.read, sector: UInt64(i * 8), address: r.iova(i * 4096), length: 4096, tag: UInt64(i)), .queued)
    }
    r.q0.kick()
    let done = r.wait(8)
    XCTAssertEqual(done.count, 8)
    for c in done {
      XCTAssertEqual(c.status, c.tag == 5 ? .ioError : .ok, "tag \(c.tag)")
      XCTAssertEqual(c.bytes, c.tag == 5 ? 0 : 4096)
    }
    XCTAssertEqual(r.q0.stats.errors, 1)
    r.disk.with { $0.unsupported = [BlockRequestType.flush] }
    XCTAssertEqual(r.q0.submitFlush(tag: 9), .queued)
    r.q0.kick()
    XCTAssertEqual(r.wait(1).first?.status, .unsupported)
    r.disk.with {
      $0.unsupported = []
      $0.statusOverride = 7
    }
    let (_, c7) = r.io(.read, sector: 0, offset: 0, length: 512)
    XCTAssertEqual(c7?.status, .invalid(7))
    XCTAssertEqual(c7?.bytes, 0)
    r.disk.with {
      $0.statusOverride = nil
      $0.lengthOverride = 0
    }
    let (_, c0) = r.io(.read, sector: 0, offset: 0, length: 512)
    XCTAssertEqual(c0?.status, .invalid(0xFF), "used length 0: the status byte was not written")
    r.disk.with { $0.lengthOverride = nil }
    let (_, ok) = r.io(.read, sector: 0, offset: 0, length: 512)
    XCTAssertEqual(ok?.status, .ok)
    XCTAssertNil(r.q0.brokenReason)
  }

  /// One part of a split request fails: the request fails once, with no bytes.
  func testSplitPartFailure() throws {
    var c = SimBlockConfig()
    c.segMax = 2
    c.sizeMax = 4096
    var r = try BlkRig<PackedVirtqueue>(features: [BlockFeature.segMax, BlockFeature.sizeMax], config: c, queueSize: 32)
    r.disk.with { $0.failing = 20..<21 }
    let (res, comp) = r.io(.read, sector: 0, offset: 0, length: 32768, tag: 3)
    XCTAssertEqual(res, .queued)
    XCTAssertEqual(comp, BlockCompletion(tag: 3, op: .read, status: .ioError, bytes: 0))
    XCTAssertEqual(r.disk.requests.count, 4)
    XCTAssertEqual(r.q0.stats.errors, 1)
    XCTAssertTrue(r.wait(1, timeout: 0.05).isEmpty, "exactly one completion")
  }

  /// A device that returns an id it never got breaks the queue; submissions
  /// are refused from then on, and the process lives.
  func testMaliciousDeviceBreaksQueue() throws {
    var r = try BlkRig<SplitVirtqueue>(queueSize: 16)
    r.device.inject(.usedID(13), queue: 0, afterCompletions: 1)
    XCTAssertEqual(r.io(.read, sector: 0, offset: 0, length: 512).1?.status, .ok)
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 512, tag: 1), .queued)
    r.q0.kick()
    XCTAssertTrue(r.wait(1, timeout: 5).isEmpty)
    XCTAssertEqual(r.q0.brokenReason, .usedIDNotInFlight(id: 13))
    XCTAssertEqual(r.q0.submit(.read, sector: 0, address: r.iova(0), length: 512, tag: 2), .queueBroken)
    XCTAssertEqual(r.q0.submitFlush(tag: 2), .queueBroken)
  }

  func testCapacityUpdate() throws {
    var r = try BlkRig<SplitVirtqueue>()
    XCTAssertEqual(r.q0.submit(.read, sector: 2048, address: r.iova(0), length: 512, tag: 0), .outOfRange)
    r.q0.updateCapacity(sectors: 1024)
    XCTAssertEqual(r.q0.submit(.read, sector: 1024, address: r.iova(0), length: 512, tag: 0), .outOfRange)
    XCTAssertEqual(r.q0.submit(.read, sector: 1023, address: r.iova(0), length: 512, tag: 0), .queued)
  }

  /// Two queues driven from two threads at once, each request landing on its own queue.
  func testTwoQueuesTwoThreads() throws {
    var c = SimBlockConfig()
    c.numQueues = 2
    var r = try BlkRig<SplitVirtqueue>(features: [BlockFeature.mq], config: c, queueSize: 16, queueCount: 2)
    XCTAssertEqual(r.config.numQueues, 2)
    let box = QueueBox(r.q1.take()!)
    let base = r.buffers
    let t = Thread1 {
      var ok = 0
      for i in 0..<200 {
        guard box.q.submit(.write, sector: 1024 + UInt64(i % 64), address: base.iova + 1 << 20, length: 512, tag: UInt64(i)) == .queued else { continue }
        box.q.kick()
        let deadline = simNowNanos() + 10_000_000_000
        while simNowNanos() < deadline {
          if let c = box.q.nextCompletion() {
            if c.status == .ok { ok += 1 }
            break
          }
          sched_yield()
        }
      }
      return ok
    }
    var ok0 = 0
    for i in 0..<200 {
      let (_, comp) = r.io(.read, sector: UInt64(i % 64), offset: 0, length: 512)
      if comp?.status == .ok { ok0 += 1 }
    }
    XCTAssertEqual(ok0, 200)
    XCTAssertEqual(t.join(), 200)
    let perQueue = Dictionary(grouping: r.disk.requests, by: \.queue).mapValues(\.count)
    XCTAssertEqual(perQueue[0], 200)
    XCTAssertEqual(perQueue[1], 200)
    XCTAssertTrue(r.disk.requests.filter { $0.queue == 1 }.allSatisfy { $0.type == BlockRequestType.write })
  }
}

/// Hands a queue to another thread (test only: the box is touched by that thread alone).
final class QueueBox<Q: Virtqueue & ~Copyable>: @unchecked Sendable {
  var q: BlockRequestQueue<Q>
  init(_ q: consuming BlockRequestQueue<Q>) { self.q = q }
}

/// A thread running `body`, joined once (for the multi-queue test).
final class Thread1: @unchecked Sendable {
  var tid = pthread_t()
  var result = 0
  let body: () -> Int

  init(_ body: @escaping () -> Int) {
    self.body = body
    let ctx = Unmanaged.passRetained(self).toOpaque()
    pthread_create(&tid, nil, { raw in
      let me = Unmanaged<Thread1>.fromOpaque(raw!).takeRetainedValue()
      me.result = me.body()
      return nil
    }, ctx)
  }

  func join() -> Int {
    pthread_join(tid, nil)
    return result
  }
}
