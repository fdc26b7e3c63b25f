// vio-vhost-check — the project's drivers against vhost-user backends on the
// host (no VM): dpdk-testpmd's net_vhost and qemu-storage-daemon's
// vhost-user-blk export. Run by Tests/host/vhost-user.sh, which starts the
// backends and checks their own counters and the disk file; and by
// tools/bench/vhost-bench for throughput.
import CheckReport
import Glibc
import Logging
import VirtioBlk
import VirtioCore
import VirtioNet
import VirtioSpec
import VirtioVhostUser

let report = Report(tool: "vio-vhost-check")
let args: Arguments
do {
  args = try Arguments(Array(CommandLine.arguments.dropFirst()))
} catch {
  print("vio-vhost-check: \(error.message)\n\(Arguments.usage)")
  exit(2)
}

LoggingSystem.bootstrap { label in
  var h = StreamLogHandler.standardError(label: label)
  h.logLevel = args.verbose ? .debug : .warning
  return h
}
let logger = Logger(label: "vio-vhost-check")

let options: VhostUserOptions = {
  var o = VhostUserOptions()
  o.memoryBytes = args.memoryMiB << 20
  o.pages = args.pages
  o.connectTimeoutMilliseconds = args.timeoutMilliseconds
  o.maxQueueSize = max(args.queueSize, 1)
  return o
}()

func netPlan() -> VhostUserOpenPlan {
  // The net driver's own policy; the layout is the test's choice.
  var wanted = NetFeaturePolicy.wanted
  if args.layout == "split" { wanted.remove(FeatureSet(bit: VirtioFeature.ringPacked)) }
  wanted.remove(FeatureSet(bits: args.without))
  var required = NetFeaturePolicy.required
  if args.layout == "packed" { required.formUnion(FeatureSet(bit: VirtioFeature.ringPacked)) }
  var plan = VhostUserOpenPlan(policy: FeaturePolicy(required: required, wanted: wanted, dependencies: NetFeaturePolicy.dependencies))
  plan.maxQueueSize = args.queueSize
  plan.queueCount = { _, _ in 2 }
  return plan
}

func blockPlan() -> VhostUserOpenPlan {
  var wanted = BlockFeaturePolicy.wanted
  if args.layout == "split" { wanted.remove(FeatureSet(bit: VirtioFeature.ringPacked)) }
  wanted.remove(FeatureSet(bits: args.without))
  var plan = VhostUserOpenPlan(policy: FeaturePolicy(required: BlockFeaturePolicy.required, wanted: wanted))
  plan.maxQueueSize = args.queueSize
  plan.queueCount = { _, _ in 1 }
  return plan
}

report.note("\(args.command) on \(args.endpoint), \(args.layout) ring asked")
do throws(VirtioError) {
  switch args.command {
  case "net":
    var body = NetCheckBody(args: args, report: report, reconnect: false)
    try VhostUser.open(args.endpoint, deviceType: .net, options: options, plan: netPlan(), logger: logger, &body)
  case "net-reconnect":
    var body = NetCheckBody(args: args, report: report, reconnect: true)
    try VhostUser.open(args.endpoint, deviceType: .net, options: options, plan: netPlan(), logger: logger, &body)
  case "blk":
    var body = BlockCheckBody(args: args, report: report)
    try VhostUser.open(args.endpoint, deviceType: .block, options: options, plan: blockPlan(), logger: logger, &body)
  case "bench-net":
    var body = NetBenchBody(args: args, report: report)
    try VhostUser.open(args.endpoint, deviceType: .net, options: options, plan: netPlan(), logger: logger, &body)
  case "bench-blk":
    var body = BlockBenchBody(args: args, report: report)
    try VhostUser.open(args.endpoint, deviceType: .block, options: options, plan: blockPlan(), logger: logger, &body)
  default:
    print("vio-vhost-check: unknown command \(args.command)\n\(Arguments.usage)")
    exit(2)
  }
} catch {
  report.fail("\(args.command)-open", "\(error.code): \(error.message)")
}
report.emit("vhost-check: \(report.passed) passed, \(report.failed) failed")
exit(report.failed == 0 ? 0 : 1)
