import CheckReport
import VirtioCore
import VirtioSpec
import VirtioVFIO

/// virtio-blk (§5.2): read capacity / blk_size / num_queues / seg_max, READ
/// sector 0 (checked against the test bed's disk pattern) and GET_ID.
struct BlockProfile: DeviceProfile {
  let kind = "blk"

  var plan: VirtioOpenPlan {
    // §5.2.2: num_queues request queues with MQ, else one.
    .modern(
      wanting: [
        BlockFeature.sizeMax, BlockFeature.segMax, BlockFeature.blkSize, BlockFeature.flush, BlockFeature.topology,
        BlockFeature.mq, BlockFeature.ro, VirtioFeature.eventIdx, VirtioFeature.indirectDesc, VirtioFeature.ringPacked,
      ]
    ) { f, t in
      f.contains(bit: BlockFeature.mq) ? max(1, Int(t.readConfig16(VirtioBlkConfig.Offset.num_queues))) : 1
    }
  }

  func describeConfig(_ t: borrowing VFIOPCITransport, features f: FeatureSet) -> (ok: Bool, text: String) {
    let read = try? t.readConsistentConfig { t in
      (
        capacity: t.readConfig64(VirtioBlkConfig.Offset.capacity),
        blkSize: t.readConfig32(VirtioBlkConfig.Offset.blk_size),
        numQueues: t.readConfig16(VirtioBlkConfig.Offset.num_queues),
        segMax: t.readConfig32(VirtioBlkConfig.Offset.seg_max),
        sizeMax: t.readConfig32(VirtioBlkConfig.Offset.size_max)
      )
    }
    guard let c = read else { return (false, "config_generation never settled") }
    let bytes = c.capacity * UInt64(VirtioBlkConfig.sectorSize)
    var parts = ["capacity \(c.capacity) sectors (\(bytes >> 20) MiB)"]
    parts.append("blk_size " + (f.contains(bit: BlockFeature.blkSize) ? "\(c.blkSize)" : "n/a (512)"))
    parts.append("num_queues " + (f.contains(bit: BlockFeature.mq) ? "\(c.numQueues)" : "n/a (1)"))
    parts.append("seg_max " + (f.contains(bit: BlockFeature.segMax) ? "\(c.segMax)" : "n/a"))
    if f.contains(bit: BlockFeature.sizeMax) { parts.append("size_max \(c.sizeMax)") }
    if f.contains(bit: BlockFeature.ro) { parts.append("read-only") }
    return (c.capacity > 0, parts.joined(separator: ", "))
  }

  func exercise<Q: ConstructibleVirtqueue & ~Copyable>(_ s: inout VirtioPCISession<Q>, report: Report, timeoutMilliseconds: Int) {
    let queue = 0
    guard let buffer = requestBuffer(&s, byteCount: 4096, alignment: 4096, check: "blk-read", report: report) else { return }
    // Layout in the buffer: outhdr at 0 (16 bytes), data at 512, status at 1024.
    let hdr = buffer.slice(offset: 0, count: 16)
    let data = buffer.slice(offset: 512, count: 512)
    let status = buffer.slice(offset: 1024, count: 1)

    // READ (VIRTIO_BLK_T_IN) of sector 0: outhdr readable, data writable, status writable (§5.2.6).
    writeOutHdr(hdr, type: BlockRequestType.read, sector: 0)
    data.pointer.initializeMemory(as: UInt8.self, repeating: 0xA5, count: 512)
    status.pointer.storeBytes(of: 0xFF, as: UInt8.self)
    let rt = roundTrip(
      &s, queue: queue,
      chain: [.readable(hdr.iova, 16), .writable(data.iova, 512), .writable(status.iova, 1)],
      token: 0xB10C, timeoutMilliseconds: timeoutMilliseconds)
    if let e = rt.error {
      report.fail("blk-read", e)
    } else {
      let st = status.pointer.load(as: UInt8.self)
      let bytes = Array(UnsafeRawBufferPointer(start: data.pointer, count: 512))
      // The test bed's image: every sector starts with "GUESTBED" + its LBA (8 bytes LE).
      let magic = Array("GUESTBED".utf8)
      let lba = bytes[8..<16].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
      let patternOK = Array(bytes[0..<8]) == magic && lba == 0
      let detail =
        "status \(st) (\(st == BlockStatus.ok ? "OK" : "not OK")), used length \(rt.used?.length ?? 0) (want 513: data + status), sector 0 starts \"\(String(decoding: bytes[0..<8], as: UTF8.self))\" LBA \(lba)"
      let how = s.features.contains(bit: VirtioFeature.indirectDesc) ? "in an indirect table" : "direct"
      report.check(
        "blk-read", st == BlockStatus.ok && rt.used?.length == 513 && patternOK,
        "3-descriptor READ of sector 0 (\(how)) on queue \(queue) in \(rt.milliseconds) ms: " + detail)
    }
    let taken = rt.vector.map { s.transport.interruptsTaken(vector: $0) } ?? 0
    reportInterrupt(report, "blk-interrupt", rt, taken: taken)

    // GET_ID: 20 bytes of serial number (§5.2.6).
    writeOutHdr(hdr, type: BlockRequestType.getID, sector: 0)
    data.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: BlockRequestType.idBytes)
    status.pointer.storeBytes(of: 0xFF, as: UInt8.self)
    let id = roundTrip(
      &s, queue: queue,
      chain: [.readable(hdr.iova, 16), .writable(data.iova, UInt32(BlockRequestType.idBytes)), .writable(status.iova, 1)],
      token: 0x1D, timeoutMilliseconds: timeoutMilliseconds)
    if let e = id.error {
      report.fail("blk-get-id", e)
    } else {
      let st = status.pointer.load(as: UInt8.self)
      let serial = Array(UnsafeRawBufferPointer(start: data.pointer, count: BlockRequestType.idBytes)).prefix { $0 != 0 }
      report.check("blk-get-id", st == BlockStatus.ok, "status \(st), serial \"\(String(decoding: serial, as: UTF8.self))\"")
    }
  }

  /// virtio_blk_outhdr (§5.2.6): type, reserved, sector — little-endian.
  private func writeOutHdr(_ r: DMARegion, type: UInt32, sector: UInt64) {
    // SAFETY: `r` is a 16-byte slice of a DMA buffer this function's caller owns.
    r.pointer.storeBytes(of: type.littleEndian, toByteOffset: 0, as: UInt32.self)
    r.pointer.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
    r.pointer.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
  }
}
