// block-log: the example storage app. An append-only log of checksummed
// records on any BlockIO target, recovered on every open.
//
//   block-log <target> format
//   block-log <target> append TEXT...     one record per argument, one commit
//   block-log <target> list               the recovery report and every record
//   block-log <target> fill N SIZE        N records of SIZE bytes, a commit every 16
//
// <target>: pci:DDDD:BB:DD.F (virtio-blk bound to vfio-pci) or a device / file.

import BlockIO
import BlockLog
import Glibc

func die(_ message: String, _ code: Int32 = 1) -> Never {
  _ = "block-log: \(message)\n".withCString { write(2, $0, strlen($0)) }
  exit(code)
}

let args = CommandLine.arguments
guard args.count >= 3 else {
  die("usage: block-log <pci:DDDD:BB:DD.F | path> format | append TEXT... | list | fill N SIZE", 64)
}
func run(_ args: [String], _ device: borrowing BlockDevice) throws {
  switch args[2] {
  case "format":
    try BlockLog.format(device)
    print("formatted \(device.info.target): \(device.info.capacityBytes / UInt64(device.info.logicalBlockSize)) blocks of \(device.info.logicalBlockSize) bytes")
  case "append":
    var log = try BlockLog(opening: device)
    var last: UInt64 = 0
    for text in args.dropFirst(3) { last = try log.append(Array(text.utf8)) }
    try log.commit()
    print("appended \(args.count - 3) record(s), last sequence \(last)")
  case "list":
    var log = try BlockLog(opening: device)
    let r = log.recovery
    print("recovered \(r.records) record(s), tail at block \(r.tailBlock) (\(r.reason))")
    for rec in try log.records() { print("\(rec.sequence)\t\(String(decoding: rec.payload, as: UTF8.self))") }
  case "fill":
    guard args.count == 5, let n = Int(args[3]), let size = Int(args[4]), n > 0, size >= 0 else { die("fill N SIZE", 64) }
    var log = try BlockLog(opening: device)
    let t0 = monotonicNanoseconds()
    for i in 0..<n {
      _ = try log.append((0..<size).map { UInt8(truncatingIfNeeded: $0 &+ i) })
      if i % 16 == 15 { try log.commit() }
    }
    try log.commit()
    let secs = Double(monotonicNanoseconds() - t0) / 1e9
    let s = log.stats
    print("appended \(n) records of \(size) bytes in \(Int(secs * 1000)) ms (\(Int(Double(n) / secs)) records/s); \(s.writes) writes, \(s.flushes) flushes")
  default:
    die("unknown command \(args[2]); use format, append, list or fill", 64)
  }
}

do {
  let device = try BlockDevice.open(args[1])
  try run(args, device)
} catch let e as VirtioError {
  die(e.message)
} catch {
  die("\(error)")
}
