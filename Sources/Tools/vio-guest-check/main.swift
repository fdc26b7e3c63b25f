// vio-guest-check: runs inside a test guest (tools/guest-test) as root. For
// each virtio-pci function given, it takes the function from the kernel,
// drives it over VFIO (negotiate, every queue with MSI-X, one request and its
// interrupt, reset), hands it back to virtio-pci and prints one
// `CHECK PASS|FAIL <name>` line per step. Exit status 1 when any check failed.
// Never run it on a host: it unbinds the functions it is given.

import CheckReport
import Glibc
import Logging
import VirtioOS
import VirtioVFIO

let arguments: Arguments
switch Arguments.parse(CommandLine.arguments) {
case .success(let a): arguments = a
case .failure(let e):
  let text = (e.message.isEmpty ? "" : "vio-guest-check: \(e.message)\n") + Arguments.usage + "\n"
  _ = text.withCString { write(2, $0, strlen($0)) }
  exit(2)
}

let level = arguments.logLevel
LoggingSystem.bootstrap { label in
  var h = StreamLogHandler.standardError(label: label)
  h.logLevel = level
  return h
}
let logger = Logger(label: "virtio.vfio")
let report = Report(tool: "vio-guest-check")
report.note("net \(arguments.net.map { "\($0)" } ?? "-"), blk \(arguments.blk.map { "\($0)" } ?? "-"), expected ring \(arguments.expectedLayout ?? "any")")

let nonce = String(UInt64(monotonicMilliseconds()) &* 2_654_435_761 & 0xFFFF_FFFF, radix: 16)
if let net = arguments.net {
  let marker = "vio-guest-check/\(arguments.expectedLayout ?? "any")/\(nonce)"
  DeviceFlow(profile: NetProfile(marker: marker), address: net, report: report, logger: logger, arguments: arguments).run()
}
if let blk = arguments.blk {
  DeviceFlow(profile: BlockProfile(), address: blk, report: report, logger: logger, arguments: arguments).run()
}

report.note("\(report.passed) passed, \(report.failed) failed")
exit(report.failed == 0 ? 0 : 1)
