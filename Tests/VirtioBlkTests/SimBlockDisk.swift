import Synchronization
import VirtioSim
import VirtioSpec

/// The device side of virtio-blk for `SimDevice`: a RAM disk that parses each
/// chain as §5.2.6 lays it out (header, data, status) and answers it, with
/// knobs for I/O errors, unsupported types and undefined status bytes.
/// Anything a correct driver would never send is recorded in `protocolErrors`.
final class SimBlockDisk: Sendable {
  struct Request: Equatable {
    var queue: Int
    var type: UInt32
    var sector: UInt64
    var dataBytes: Int
    var dataSegments: Int
    /// Discard / write-zeroes range.
    var rangeSectors: UInt32 = 0
    var rangeFlags: UInt32 = 0
  }

  struct State {
    var data: [UInt8]
    var requests: [Request] = []
    var protocolErrors: [String] = []
    /// Requests touching these sectors fail with IOERR.
    var failing: Range<UInt64>? = nil
    /// Request types answered with UNSUPP.
    var unsupported: Set<UInt32> = []
    /// Written instead of the real status (a misbehaving device).
    var statusOverride: UInt8? = nil
    /// Reported used length instead of the real one.
    var lengthOverride: UInt32? = nil
  }

  let sectors: Int
  let state: Mutex<State>
  static let serial = Array("SIMBLK-0001".utf8)

  init(sectors: Int) {
    self.sectors = sectors
    var data = [UInt8](repeating: 0, count: sectors * 512)
    for s in 0..<sectors { Self.fillPattern(&data, sector: s) }
    state = Mutex(State(data: data))
  }

  /// Initial content of sector `s`: its number, then a ramp.
  static func fillPattern(_ data: inout [UInt8], sector s: Int) {
    for i in 0..<512 { data[s * 512 + i] = UInt8(truncatingIfNeeded: s &* 7 &+ i) }
  }
  static func pattern(sector s: Int, byte i: Int) -> UInt8 { UInt8(truncatingIfNeeded: s &* 7 &+ i) }

  var behaviour: SimDevice.Behaviour {
    .custom { [self] queue, _, segs in handle(queue, segs) }
  }

  func with<R>(_ body: (inout State) -> R) -> R { state.withLock { body(&$0) } }

  func bytes(at offset: Int, count: Int) -> [UInt8] { with { Array($0.data[offset..<offset + count]) } }
  var requests: [Request] { with { $0.requests } }
  var protocolErrors: [String] { with { $0.protocolErrors } }

  func handle(_ queue: Int, _ segs: [DeviceSegment]) -> UInt32 {
    state.withLock { s -> UInt32 in
      func bad(_ why: String) -> UInt32 {
        s.protocolErrors.append("queue \(queue): \(why)")
        return 0
      }
      // §5.2.6: header first (device-readable, 16 bytes), status last (device-writable).
      guard segs.count >= 2, let head = segs.first, let status = segs.last else { return bad("chain of \(segs.count) segments") }
      guard !head.isWritable, head.length == 16 else { return bad("header segment \(head)") }
      guard status.isWritable, status.length >= 1 else { return bad("status segment \(status)") }
      let type = UInt32(littleEndian: head.pointer.loadUnaligned(as: UInt32.self))
      let sector = UInt64(littleEndian: head.pointer.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
      let data = segs.dropFirst().dropLast()
      let dataBytes = data.reduce(0) { $0 + Int($1.length) }
      var req = Request(queue: queue, type: type, sector: sector, dataBytes: dataBytes, dataSegments: data.count)
      var st = VirtioSpec.BlockStatus.ok
      var written = UInt32(1)
      let last = status.pointer + Int(status.length) - 1

      func touches(_ first: UInt64, _ count: UInt64) -> Bool {
        guard let f = s.failing else { return false }
        return first < f.upperBound && f.lowerBound < first + count
      }
      switch type {
      case BlockRequestType.read, BlockRequestType.write:
        let isRead = type == BlockRequestType.read
        guard data.allSatisfy({ $0.isWritable == isRead }) else { return bad("data direction wrong for type \(type)") }
        guard dataBytes % 512 == 0, dataBytes > 0 else { return bad("data length \(dataBytes)") }
        guard sector + UInt64(dataBytes / 512) <= UInt64(sectors) else { return bad("sector \(sector)+\(dataBytes / 512) past the end") }
        if isRead { written = UInt32(dataBytes) + 1 }
        if touches(sector, UInt64(dataBytes / 512)) {
          st = VirtioSpec.BlockStatus.ioErr
        } else {
          var off = Int(sector) * 512
          for d in data {
            s.data.withUnsafeMutableBytes { disk in
              if isRead {
                d.pointer.copyMemory(from: disk.baseAddress! + off, byteCount: Int(d.length))
              } else {
                (disk.baseAddress! + off).copyMemory(from: d.pointer, byteCount: Int(d.length))
              }
            }
            off += Int(d.length)
          }
        }
      case BlockRequestType.flush:
        guard data.isEmpty else { return bad("flush with data") }
      case BlockRequestType.getID:
        guard data.count == 1, data.first!.isWritable, data.first!.length >= 20 else { return bad("get-id buffer") }
        let p = data.first!.pointer
        p.initializeMemory(as: UInt8.self, repeating: 0, count: 20)
        for (i, b) in Self.serial.enumerated() { p.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
        written = 21
      case BlockRequestType.discard, BlockRequestType.writeZeroes:
        guard data.count == 1, !data.first!.isWritable, data.first!.length == 16 else { return bad("range segment") }
        let r = data.first!.pointer
        let first = UInt64(littleEndian: r.loadUnaligned(as: UInt64.self))
        let count = UInt32(littleEndian: r.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        let flags = UInt32(littleEndian: r.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        req.sector = first
        req.rangeSectors = count
        req.rangeFlags = flags
        guard sector == 0 else { return bad("range request with header sector \(sector)") }
        guard first + UInt64(count) <= UInt64(sectors) else { return bad("range past the end") }
        if type == BlockRequestType.discard && flags != 0 { return bad("discard with flags \(flags)") }
        if touches(first, UInt64(count)) {
          st = VirtioSpec.BlockStatus.ioErr
        } else {
          for i in Int(first) * 512..<(Int(first) + Int(count)) * 512 { s.data[i] = 0 }
        }
      default:
        st = VirtioSpec.BlockStatus.unsupp
      }
      if s.unsupported.contains(type) { st = VirtioSpec.BlockStatus.unsupp }
      s.requests.append(req)
      last.storeBytes(of: s.statusOverride ?? st, as: UInt8.self)
      return s.lengthOverride ?? written
    }
  }
}

/// virtio_blk_config bytes (§5.2.4), little-endian, for `SimTransport(config:)`.
struct SimBlockConfig {
  var capacity: UInt64 = 2048
  var sizeMax: UInt32 = 0
  var segMax: UInt32 = 0
  var blkSize: UInt32 = 512
  var physicalBlockExp: UInt8 = 0
  var minIOSize: UInt16 = 1
  var optIOSize: UInt32 = 0
  var writeback: UInt8 = 1
  var numQueues: UInt16 = 1
  var maxDiscardSectors: UInt32 = 0
  var maxDiscardSeg: UInt32 = 1
  var discardSectorAlignment: UInt32 = 1
  var maxWriteZeroesSectors: UInt32 = 0
  var maxWriteZeroesSeg: UInt32 = 1
  var writeZeroesMayUnmap: UInt8 = 0

  var bytes: [UInt8] {
    typealias O = VirtioBlkConfig.Offset
    var b = [UInt8](repeating: 0, count: VirtioBlkConfig.sizeThroughSecureErase)
    func put<T: FixedWidthInteger>(_ v: T, _ off: Int) {
      withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[off + i] = x } }
    }
    put(capacity, O.capacity)
    put(sizeMax, O.size_max)
    put(segMax, O.seg_max)
    put(blkSize, O.blk_size)
    put(physicalBlockExp, O.physical_block_exp)
    put(minIOSize, O.min_io_size)
    put(optIOSize, O.opt_io_size)
    put(writeback, O.writeback)
    put(numQueues, O.num_queues)
    put(maxDiscardSectors, O.max_discard_sectors)
    put(maxDiscardSeg, O.max_discard_seg)
    put(discardSectorAlignment, O.discard_sector_alignment)
    put(maxWriteZeroesSectors, O.max_write_zeroes_sectors)
    put(maxWriteZeroesSeg, O.max_write_zeroes_seg)
    put(writeZeroesMayUnmap, O.write_zeroes_may_unmap)
    return b
  }
}
