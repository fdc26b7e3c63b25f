import BlockIO
import Glibc
import Histogram
import ToolSupport

/// SIGINT or SIGTERM, by name, for the reports.
var stopSignalName: String {
  switch stopSignal.load(ordering: .relaxed) {
  case SIGINT: "SIGINT"
  case SIGTERM: "SIGTERM"
  case let s: "signal \(s)"
  }
}

/// fio's percentile list (its default `percentile_list`).
let percentileList: [Double] = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]

/// The human summary, shaped like fio's (per job: IOPS, bandwidth, clat
/// percentiles), plus vio-fio's queue counters and verify results.
enum NormalReport {
  static func render(_ jobs: [(JobSpec, JobResult)], info: BlockDeviceInfo) -> String {
    var out = ""
    for (spec, r) in jobs {
      let err = r.failed ? 5 : 0  // EIO, as fio reports a job that saw I/O errors
      out += "\(spec.name): (groupid=0, jobs=1): err=\(err): job=\(spec.index): \(spec.workload.rawValue), bs=\(spec.blockSize), iodepth=\(spec.depth)\n"
      for (label, d) in [("read", r.read), ("write", r.write), ("trim", r.trim)] where d.ios > 0 || d.errors > 0 {
        out += direction(label, d, runtime: r.runtimeNanoseconds)
      }
      let s = r.queueStats
      out +=
        "  vio: queue=\(r.queueIndex) backend=\(info.backend.rawValue)\(info.dmaAddressing.map { " dma=\($0.rawValue)" } ?? "") requests=\(s.requests) completed_ok=\(r.read.ios + r.write.ios + r.trim.ios) "
        + "reads=\(s.reads) writes=\(s.writes) "
        + "discards=\(s.discards) write_zeroes=\(s.writeZeroes) flushes=\(s.flushes) errors=\(s.errors) notifications=\(s.notifications) "
        + "interrupts=\(s.interrupts) queue_full=\(s.queueFullEvents) queue_full_ms=\(Units.fixed(Double(s.queueFullNanoseconds) / 1e6, 3)) "
        + "splits=\(s.splits) device_requests=\(s.deviceRequests)"
        + (s.deviceRestarts > 0 ? " device_restarts=\(s.deviceRestarts) resubmitted=\(s.requestsResubmitted) lost=\(s.requestsLost)" : "") + "\n"
      if r.interrupted {
        let done = r.read.ios + r.write.ios + r.trim.ios
        out += "  interrupted: \(stopSignalName) stopped the job after \(done) of \(spec.blocks) blocks\(spec.timeBased ? " (time_based)" : "")"
        out += r.verifyPlanned > 0 && !r.verifyComplete ? "; the verify is incomplete, the run fails\n" : "\n"
      }
      if spec.verify != .none {
        let incomplete = r.verifyComplete ? "" : " (incomplete: \(r.verifyPlanned - min(r.verifyPlanned, r.verifiedBlocks + r.badBlockCount)) of \(r.verifyPlanned) blocks not checked)"
        out += "  verify: \(r.verifiedBlocks) blocks ok, \(r.badBlockCount) bad\(incomplete)\n"
        for b in r.badBlocks { out += "  verify: bad block at offset \(b.offset) (\(Units.hex(b.offset))): \(b.why)\n" }
        if r.badBlockCount > UInt64(r.badBlocks.count) { out += "  verify: ... and \(r.badBlockCount - UInt64(r.badBlocks.count)) more\n" }
      }
      for f in r.failedRequests {
        out += "  error: \(f.op) of \(f.length) bytes at offset \(f.offset) (\(Units.hex(f.offset))) failed: \(f.status)\n"
      }
      let errors = r.read.errors + r.write.errors + r.trim.errors
      if errors > UInt64(r.failedRequests.count) { out += "  error: ... and \(errors - UInt64(r.failedRequests.count)) more failed requests\n" }
      for n in r.notes { out += "  note: \(n)\n" }
      if let f = r.fatal { out += "  fatal: \(f)\n" }
    }
    out += "\nRun status group 0 (all jobs):\n"
    for (label, pick) in [("READ", \JobResult.read), ("WRITE", \JobResult.write), ("TRIM", \JobResult.trim)] {
      let bytes = jobs.reduce(UInt64(0)) { $0 + $1.1[keyPath: pick].bytes }
      guard bytes > 0 else { continue }
      let run = jobs.map(\.1.runtimeNanoseconds).max() ?? 1
      let bw = Double(bytes) / (Double(max(run, 1)) / 1e9)
      out += "  \(label): bw=\(Units.bandwidth(bw)), io=\(Units.bytes(bytes)), run=\(run / 1_000_000)msec\n"
    }
    if jobs.contains(where: { $0.1.interrupted }) { out += "\nInterrupted by \(stopSignalName): the run was cut short.\n" }
    out += "\nDisk: \(info.target) (\(info.details))\n"
    if let f = info.fallback { out += "Fallback: kernel path (\(f.kernelName)) because \(f.summary): \(f.message)\n" }
    return out
  }

  static func direction(_ label: String, _ d: DirectionStats, runtime: UInt64) -> String {
    let secs = Double(max(runtime, 1)) / 1e9
    let iops = Double(d.ios) / secs
    let bw = Double(d.bytes) / secs
    var s = "  \(label): IOPS=\(Units.count(iops)), BW=\(Units.bandwidth(bw))(\(Units.bytes(d.bytes))/\(runtime / 1_000_000)msec)"
    s += d.errors > 0 ? ", errors=\(d.errors)\n" : "\n"
    guard d.clat.totalCount > 0 else { return s }
    let h = d.clat
    s += "    clat (nsec): min=\(h.min), max=\(h.max), avg=\(Units.fixed(h.mean, 2)), stdev=\(Units.fixed(h.stdDeviation, 2))\n"
    s += "    clat percentiles (nsec):\n"
    var line = "     |"
    for (i, p) in percentileList.enumerated() {
      let key = Units.fixed(p, 2) + "th"
      let item = " \(key)=[\(pad(h.valueAtPercentile(p), 7))]"
      line += item + (i == percentileList.count - 1 ? "" : ",")
      if (i + 1) % 4 == 0 || i == percentileList.count - 1 {
        s += line + "\n"
        line = "     |"
      }
    }
    return s
  }

  static func pad(_ v: UInt64, _ w: Int) -> String {
    let t = String(v)
    return String(repeating: " ", count: max(0, w - t.count)) + t
  }
}

/// `--output-format=json`, shaped like fio's so fio tooling reads it:
/// jobs[].read/write/trim with io_bytes, bw (KiB/s), bw_bytes, iops, runtime,
/// total_ios and clat_ns { min, max, mean, stddev, N, percentile { "99.000000": ns } }.
/// vio-fio's own numbers sit in jobs[].vio.
enum JSONReport {
  static func render(_ jobs: [(JobSpec, JobResult)], info: BlockDeviceInfo, timestamp: Int) -> String {
    var j = JSON()
    j.open("{")
    j.key("fio version"); j.string("vio-fio-0.1")
    j.key("timestamp"); j.int(timestamp)
    j.key("interrupted"); j.bool(jobs.contains { $0.1.interrupted })
    if jobs.contains(where: { $0.1.interrupted }) { j.key("stop_signal"); j.string(stopSignalName) }
    j.key("global options"); j.open("{")
    j.key("filename"); j.string(info.target)
    j.close("}")
    j.key("jobs"); j.open("[")
    for (spec, r) in jobs {
      j.open("{")
      j.key("jobname"); j.string(spec.name)
      j.key("groupid"); j.int(0)
      j.key("error"); j.int(r.failed ? 5 : 0)
      j.key("job_runtime"); j.int(Int(r.runtimeNanoseconds / 1_000_000))
      j.key("interrupted"); j.bool(r.interrupted)
      j.key("job options"); j.open("{")
      j.key("rw"); j.string(spec.workload.rawValue)
      j.key("bs"); j.string(String(spec.blockSize))
      j.key("iodepth"); j.string(String(spec.depth))
      j.key("offset"); j.string(String(spec.start))
      j.key("size"); j.string(String(spec.length))
      j.close("}")
      for (label, d) in [("read", r.read), ("write", r.write), ("trim", r.trim)] {
        direction(&j, label, d, runtime: r.runtimeNanoseconds)
      }
      let s = r.queueStats
      j.key("vio"); j.open("{")
      j.key("queue"); j.int(r.queueIndex)
      j.key("backend"); j.string(info.backend.rawValue)
      if let a = info.dmaAddressing { j.key("dma_addressing"); j.string(a.rawValue) }
      j.key("details"); j.string(info.details)
      if !r.notes.isEmpty {
        j.key("notes"); j.open("[")
        for n in r.notes { j.string(n) }
        j.close("]")
      }
      if let f = info.fallback {
        j.key("fallback"); j.open("{")
        j.key("device"); j.string(f.kernelName)
        j.key("because"); j.string(f.summary)
        j.key("reason"); j.string(f.message)
        j.close("}")
      }
      let counters: KeyValuePairs<String, UInt64> = [
        "requests": s.requests, "notifications": s.notifications, "interrupts": s.interrupts,
        "queue_full_events": s.queueFullEvents, "queue_full_ns": s.queueFullNanoseconds, "splits": s.splits,
        "device_requests": s.deviceRequests, "errors": s.errors, "device_restarts": s.deviceRestarts,
        "requests_resubmitted": s.requestsResubmitted, "requests_lost": s.requestsLost,
        "flushed_ios": r.flushedIOs.load(ordering: .relaxed), "flushed_bytes": r.flushedBytes.load(ordering: .relaxed),
      ]
      for (key, value) in counters { j.key(key); j.uint(value) }
      j.key("max_transfer_bytes"); j.int(info.maxTransferBytes)
      j.key("verify"); j.open("{")
      j.key("blocks_ok"); j.uint(r.verifiedBlocks)
      j.key("blocks_bad"); j.uint(r.badBlockCount)
      j.key("blocks_planned"); j.uint(r.verifyPlanned)
      j.key("complete"); j.bool(r.verifyComplete)
      j.key("bad_offsets"); j.open("[")
      for b in r.badBlocks { j.uint(b.offset) }
      j.close("]")
      j.close("}")
      j.key("failed_requests"); j.open("[")
      for f in r.failedRequests {
        j.open("{")
        j.key("op"); j.string("\(f.op)")
        j.key("offset"); j.uint(f.offset)
        j.key("length"); j.int(f.length)
        j.key("status"); j.string("\(f.status)")
        j.close("}")
      }
      j.close("]")
      if let f = r.fatal { j.key("fatal"); j.string(f) }
      j.close("}")
      j.close("}")
    }
    j.close("]")
    j.key("disk_util"); j.open("[")
    j.close("]")
    j.close("}")
    return j.text + "\n"
  }

  static func direction(_ j: inout JSON, _ label: String, _ d: DirectionStats, runtime: UInt64) {
    let secs = Double(max(runtime, 1)) / 1e9
    let bw = Double(d.bytes) / secs
    j.key(label); j.open("{")
    j.key("io_bytes"); j.uint(d.bytes)
    j.key("io_kbytes"); j.uint(d.bytes / 1024)
    j.key("bw_bytes"); j.uint(Units.clamped(bw))
    j.key("bw"); j.uint(Units.clamped(bw / 1024))
    j.key("iops"); j.double(Double(d.ios) / secs)
    j.key("runtime"); j.uint(d.ios > 0 ? runtime / 1_000_000 : 0)
    j.key("total_ios"); j.uint(d.ios)
    j.key("short_ios"); j.int(0)
    j.key("drop_ios"); j.int(0)
    j.key("errors"); j.uint(d.errors)
    for name in ["clat_ns", "lat_ns"] {
      j.key(name); j.open("{")
      let h = d.clat
      let empty = h.totalCount == 0
      j.key("min"); j.uint(empty ? 0 : h.min)
      j.key("max"); j.uint(empty ? 0 : h.max)
      j.key("mean"); j.double(empty ? 0 : h.mean)
      j.key("stddev"); j.double(empty ? 0 : h.stdDeviation)
      j.key("N"); j.uint(h.totalCount)
      if !empty && name == "clat_ns" {
        j.key("percentile"); j.open("{")
        for p in percentileList { j.key(Units.fixed(p, 6)); j.uint(h.valueAtPercentile(p)) }
        j.close("}")
      }
      j.close("}")
    }
    j.close("}")
  }
}

extension JSON {
  mutating func double(_ v: Double) {
    raw(v.isFinite ? Units.fixed(v, 6) : "0")
  }
}
