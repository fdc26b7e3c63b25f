// vio-fwd: a packet forwarder in the manner of DPDK's testpmd, over PacketIO.
// Ports are virtio-net functions over VFIO (pci:BDF), vhost-user net backends
// (vhost-user:/path.sock, e.g. dpdk-testpmd --vdev net_vhost0,iface=/path.sock)
// or kernel interfaces (AF_PACKET); one worker thread per queue pair owns
// queue q of every port.
//
//   vio-fwd --port pci:0000:00:03.0 --port pci:0000:00:04.0            # io: A <-> B
//   vio-fwd --port eth1 --mode macswap                                  # back out of eth1
//   vio-fwd --port pci:0000:00:03.0 --mode txonly --pkt-size 64 --duration 10
//   vio-fwd --port vhost-user:/tmp/vhost-net.sock --port eth1            # a DPDK vhost port <-> eth1
//
// Exit status: 0 done, 1 a port failed at run time, 64 bad usage (unknown
// port, not virtio-net, burst 0 or larger than a ring, ...).
import ArgumentParser
import Glibc
import Logging
import PacketIO
import ToolSupport
import VioMetrics
import VirtioCore
import VirtioNet

enum Mode: String, ExpressibleByArgument, CaseIterable {
  /// Port 2k <-> port 2k+1; an odd last port sends back out of itself.
  case io
  /// As io, swapping source and destination MAC.
  case macswap
  /// Receive and free.
  case rxonly
  /// Generate --pkt-size frames on every port.
  case txonly
}

enum RingChoice: String, ExpressibleByArgument, CaseIterable {
  case auto
  case split
  case packed
}

enum WaitMode: String, ExpressibleByArgument, CaseIterable {
  /// Busy polling.
  case poll
  /// Poll while there is traffic; after --idle-polls empty polls, re-arm and sleep on the queues' interrupts.
  case hybrid
  /// Sleep after every empty poll (hybrid with --idle-polls 1).
  case interrupt
}

@main
struct VioFwd: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vio-fwd",
    abstract: "Forward packets between ports: virtio-net over VFIO (pci:BDF) or vhost-user (vhost-user:/path.sock), or kernel interfaces (AF_PACKET).",
    discussion: """
      A pci: port the userspace path cannot take (no IOMMU, VFIO unusable, a legacy-only device, a feature missing) is handed back to the kernel's virtio-net driver and forwarded over AF_PACKET; the reason is printed (and in --json). --no-fallback makes that an error instead.
      Ports pair up in the order given (0<->1, 2<->3); an odd last port sends back out of itself.
      One worker thread per queue pair serves queue q of every port, with one buffer pool:
      a packet received on a VFIO or vhost-user port is transmitted on another of its kind without a copy.
      A group mixes VFIO ports or vhost-user ports (not both) with kernel interfaces. A vhost-user backend
      that restarts takes the port's link down until it is back; the forwarder reconnects and goes on. A device that sets
      DEVICE_NEEDS_RESET is reset and set up again in-process (link down meanwhile; frames lost in the reset are counted).
      Live line per --stats-period on stderr; final summary on stderr, or one JSON line on stdout with --json.
      Exit status: 0 done, 1 a port failed, 64 bad usage or a port that is not there (docs/USAGE.md).
      """)

  @Option(
    name: .customLong("port"),
    help:
      "A port: pci:DDDD:BB:DD.F (virtio-net over VFIO), vhost-user:/path.sock (connect to a vhost-user backend; vhost-user-server:/path.sock listens) or an interface name. Repeatable."
  )
  var ports: [String] = []
  @Option(help: "Forwarding mode: \(Mode.allCases.map(\.rawValue).joined(separator: ", ")).")
  var mode: Mode = .io
  @Option(help: "Queue pairs per port, one worker thread each (default 1, or one per --cpus CPU).")
  var queues: Int?
  @Option(help: "Pin one worker per CPU, in order (worker q on the q-th CPU): a cpulist such as 1,2 or 0-3, within the CPUs this process may use.")
  var cpus: String?
  @Option(help: "Packets per receive/transmit burst (1 ... the smallest ring).")
  var burst: Int = 32
  @Option(help: "RX ring size (descriptors / frames).")
  var rxd: Int = 256
  @Option(help: "TX ring size (descriptors / frames).")
  var txd: Int = 256
  @Option(name: .customLong("pkt-size"), help: "Frame size in bytes for txonly (60 ... the MTU + 14).")
  var pktSize: Int = 64
  @Option(help: "How long to run: seconds (10, 0.5) or with a unit (500ms, 2m, 1h); 0: until SIGINT/SIGTERM.")
  var duration: String = "0"
  @Option(name: .customLong("stats-period"), help: "Time between live lines: seconds (1, 0.5) or with a unit (500ms, 1m); 0: no live lines.")
  var statsPeriod: String = "1"
  @Flag(help: "Print the final summary as one JSON object on stdout.")
  var json = false
  @Option(help: "How workers wait for packets: \(WaitMode.allCases.map(\.rawValue).joined(separator: ", ")).")
  var wait: WaitMode = .poll
  @Option(name: .customLong("idle-polls"), help: "hybrid: empty polls in a row before sleeping.")
  var idlePolls: Int = 1024
  @Option(
    name: .customLong("idle-pause"),
    help: "PAUSE instructions after a round that moved nothing (0 ... 1000; default 1 for rxonly, which forwards nothing a pause could delay, 0 otherwise). A spin-wait hint; under QEMU's TCG each one also lets the emulator's device thread take its lock.")
  var idlePause: Int?
  @Flag(
    name: .customLong("tx-first"),
    help: "io/macswap: send one burst of --pkt-size frames out of every port before forwarding (as testpmd's tx_first), so two ports joined back to back keep frames circulating.")
  var txFirst = false
  @Option(name: .customLong("tx-retries"), help: "Times to retry the unsent rest of a burst on a full TX ring before dropping it (counted).")
  var txRetries: Int = 64
  @Flag(
    name: .customLong("no-fallback"),
    help: "Fail when a pci: port cannot run over VFIO instead of handing it back to the kernel's virtio-net driver (AF_PACKET).")
  var noFallback = false
  @Flag(
    name: .customLong("allow-no-iommu"),
    help:
      "Without an IOMMU, drive pci: ports bound with vio-bind bind --no-iommu (vfio-pci in no-IOMMU mode, or uio_pci_generic) from this process with physical addresses (root, 2 MiB hugepages) instead of the kernel path. The devices can then reach all memory: nothing contains a driver bug.")
  var allowNoIOMMU = false
  @Option(help: "Ring layout: auto (packed when the device offers it), split or packed.")
  var ring: RingChoice = .auto
  @Flag(name: .customLong("no-csum-offload"), help: "Do not negotiate checksum offload (VIRTIO_NET_F_CSUM/GUEST_CSUM); complete checksums in software when needed.")
  var noCsumOffload = false
  @Flag(
    name: .customLong("no-tso"),
    help: "Do not negotiate TCP segmentation offload (VIRTIO_NET_F_HOST_TSO4/6, GUEST_TSO4/6, ECN); a large TCP segment from another port is then segmented in software.")
  var noTSO = false
  @Flag(name: .customLong("no-offloads"), help: "Neither checksum nor segmentation offload: --no-csum-offload and --no-tso.")
  var noOffloads = false
  @Flag(
    name: .customLong("no-mrg-rxbuf"),
    help: "Do not negotiate VIRTIO_NET_F_MRG_RXBUF: every received frame must fit one buffer (then --buffer-size must hold the largest frame; no GUEST_TSO either).")
  var noMergeableBuffers = false
  @Flag(
    name: .customLong("mrg-rxbuf"),
    help: "Negotiate VIRTIO_NET_F_MRG_RXBUF whenever offered. Default: only where needed (receive TSO, or --buffer-size given), since it costs the device work per frame.")
  var mergeableBuffers = false
  @Flag(
    name: .customLong("no-event-idx"),
    help: "Do not negotiate VIRTIO_F_EVENT_IDX: doorbells and interrupts are suppressed by flags only (measure first: docs/PERFORMANCE.md, issue 17).")
  var noEventIndex = false
  @Option(
    name: .customLong("rx-refill"),
    help: "Refill a receive ring once this many of its slots are free (1 ... --rxd; default: an eighth of the ring, at most 32).")
  var rxRefill: Int?
  @Option(
    name: .customLong("tx-reclaim-below"),
    help: "Reclaim sent buffers only when fewer than this many transmit slots are free (1 ... --txd; default: on every transmit).")
  var txReclaimBelow: Int?
  @Option(
    name: .customLong("tx-kick-batch"),
    help: "Ring a transmit doorbell the device asked for only every this many packets, or when the ring fills or the loop goes idle (1 ... --txd; default 1: every burst).")
  var txKickBatch: Int = 1
  @Option(
    name: .customLong("buffer-size"),
    help: "Bytes per packet buffer (256 ... 65536); default: room for the largest frame the MTUs allow. Smaller: larger frames arrive and leave as chains of buffers (MRG_RXBUF).")
  var bufferSize: Int?
  @Flag(name: .customLong("no-promisc"), help: "Do not put the ports in promiscuous mode (receive only frames the device's MAC and filters let through).")
  var noPromisc = false
  @Flag(help: "Receive-side scaling (VIRTIO_NET_F_RSS) with hash report when offered: flows spread over --queues by the Toeplitz hash (QEMU: virtio-net-pci rss=on,hash=on).")
  var rss = false
  @Option(name: .customLong("rss-key"), help: "RSS Toeplitz key in hex (at most the device's rss_max_key_size bytes; default: the common 40-byte key). Implies --rss.")
  var rssKey: String?
  @Option(name: .customLong("rss-table"), help: "RSS indirection table: queue per hash bucket, e.g. 0,1,1,0 (a power of two of entries, each below --queues). Implies --rss.")
  var rssTable: String?
  @Option(name: .customLong("rss-hash"), help: "RSS hash types: \(NetHashType.names.map(\.0).joined(separator: ",")) (default: all the device supports). Implies --rss.")
  var rssHash: String?
  @Flag(
    name: .customLong("tag-rx"),
    help: "Test mode (io/macswap): rewrite each forwarded frame's source MAC to 02:<queue>:<reported hash, 4 bytes> (06:<queue>:0 without a hash), so the far end sees which queue and hash each flow got.")
  var tagReceive = false
  @Option(help: "Set the ports' MAC address (VIRTIO_NET_CTRL_MAC_ADDR_SET).")
  var mac: String?
  @Option(name: .customLong("mac-filter"), help: "Receive frames for these MACs besides the port's own (comma-separated, multicast too; 'none' for only its own). Implies --no-promisc.")
  var macFilter: String?
  @Option(name: .customLong("vlan-filter"), help: "Receive tagged frames only for these VLAN ids (e.g. 5,100-102). Implies --no-promisc.")
  var vlanFilter: String?
  @Option(name: .customLong("stats-file"), help: "Rewrite this file every stats period with key=value counters (for scripts).")
  var statsFile: String?
  @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical.")
  var logLevel: String = "warning"
  @OptionGroup(title: "Metrics")
  var metrics: MetricsOptions
  /// Test only (issue 18's fault test): once a port sent N frames, its split
  /// TX ring publishes an impossible avail index so the device itself sets
  /// DEVICE_NEEDS_RESET, and the port recovers in-process.
  @Option(name: .customLong("test-only-needs-reset-after"), help: .hidden)
  var testOnlyNeedsResetAfter: Int?
  /// Test only (issue 15's filter test): once port 0 received N frames, the
  /// ports' receive filters are cleared at run time (promiscuous on, MAC
  /// table emptied, --vlan-filter's VLANs removed).
  @Option(name: .customLong("test-only-clear-filters-after"), help: .hidden)
  var testOnlyClearFiltersAfter: Int?

  /// Longest --duration and --stats-period: a year.
  static let maxNanoseconds: UInt64 = 365 * 86_400 * 1_000_000_000

  func validate() throws {
    guard !ports.isEmpty else { throw ValidationError("give at least one --port (pci:BDF, vhost-user:/path.sock or an interface name)") }
    for p in ports {
      do throws(VirtioError) {
        _ = try PortAddress(parsing: p)
      } catch {
        throw ValidationError(error.message)
      }
    }
    if let q = queues { try Numbers.check(q, option: "--queues", in: 1...32) }
    if let c = cpus {
      let list = try Lists.cpus(c, option: "--cpus")
      try Numbers.check(list.count, option: "--cpus (workers)", in: 1...32)
      if let q = queues, q != list.count {
        throw ValidationError("--cpus \(c) names \(list.count) CPU(s) but --queues is \(q); one worker per queue pair and CPU: give as many of each")
      }
      let allowed: [Int]
      do throws(SysError) {
        allowed = try allowedCPUs()
      } catch {
        throw ValidationError("--cpus: \(error)")
      }
      if let bad = list.first(where: { !allowed.contains($0) }) {
        throw ValidationError("--cpus \(c): CPU \(bad) is not one this process may run on (allowed: \(Self.cpuList(allowed))); pick from those")
      }
    }
    _ = try steering()
    try Numbers.check(burst, option: "--burst", in: 1...1024, what: "(and at most the ring size)")
    try Numbers.check(rxd, option: "--rxd", in: 1...32768)
    try Numbers.check(txd, option: "--txd", in: 1...32768)
    guard burst <= rxd && burst <= txd else {
      throw ValidationError("--burst \(burst) is larger than the rings (--rxd \(rxd), --txd \(txd)); a burst must fit in one ring")
    }
    try Numbers.check(pktSize, option: "--pkt-size", in: 60...(9216 + 18), what: "bytes")
    if txFirst && mode != .io && mode != .macswap {
      throw ValidationError("--tx-first seeds io or macswap forwarding; --mode \(mode.rawValue) does not forward (drop --tx-first, or use --mode io)")
    }
    _ = try Numbers.duration(duration, option: "--duration", in: 0...Self.maxNanoseconds)
    _ = try Numbers.duration(statsPeriod, option: "--stats-period", in: 0...Self.maxNanoseconds)
    if let b = bufferSize { try Numbers.check(b, option: "--buffer-size", in: 256...65536, what: "bytes") }
    if mergeableBuffers && noMergeableBuffers {
      throw ValidationError("--mrg-rxbuf and --no-mrg-rxbuf contradict each other; give one (or neither: MRG_RXBUF where it is needed)")
    }
    try Numbers.check(idlePolls, option: "--idle-polls", in: 1...Int(Int32.max))
    if let n = idlePause { try Numbers.check(n, option: "--idle-pause", in: 0...1000, what: "PAUSE instructions") }
    if let n = rxRefill { try Numbers.check(n, option: "--rx-refill", in: 1...rxd, what: "free slots (at most --rxd)") }
    if let n = txReclaimBelow { try Numbers.check(n, option: "--tx-reclaim-below", in: 1...txd, what: "free slots (at most --txd)") }
    try Numbers.check(txKickBatch, option: "--tx-kick-batch", in: 1...txd, what: "packets (at most --txd)")
    try Numbers.check(txRetries, option: "--tx-retries", in: 0...Int(Int32.max))
    if let n = testOnlyNeedsResetAfter { try Numbers.check(n, option: "--test-only-needs-reset-after", in: 1...1_000_000_000) }
    if let n = testOnlyClearFiltersAfter {
      try Numbers.check(n, option: "--test-only-clear-filters-after", in: 1...1_000_000_000)
      guard macFilter != nil || vlanFilter != nil else {
        throw ValidationError("--test-only-clear-filters-after needs filters to clear: give --mac-filter or --vlan-filter")
      }
    }
    guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel): use trace, debug, info, notice, warning, error or critical") }
  }

  /// `[0,1,2,5]` as `0-2,5`.
  static func cpuList(_ cpus: [Int]) -> String {
    var parts: [String] = []
    var i = 0
    while i < cpus.count {
      var j = i
      while j + 1 < cpus.count && cpus[j + 1] == cpus[j] + 1 { j += 1 }
      parts.append(i == j ? "\(cpus[i])" : "\(cpus[i])-\(cpus[j])")
      i = j + 1
    }
    return parts.joined(separator: ",")
  }

  /// RSS and filter options as PortOptions settings (validated: exit 64 with a message).
  func steering() throws -> (rss: RSSConfig?, mac: MACAddress?, macFilter: [MACAddress]?, vlans: [UInt16]?) {
    var r: RSSConfig? = nil
    if rss || rssKey != nil || rssTable != nil || rssHash != nil {
      var c = RSSConfig()
      if let k = rssKey {
        c.key = try Lists.hex(k, option: "--rss-key")
        guard c.key!.count <= 255 else { throw ValidationError("--rss-key: \(c.key!.count) bytes; at most 255 (and the device's rss_max_key_size)") }
      }
      if let t = rssTable {
        let table = try Lists.table(t, option: "--rss-table", in: 0...31)
        guard table.count & (table.count - 1) == 0, table.count <= 65536 else {
          throw ValidationError("--rss-table: \(table.count) entries; use a power of two (1, 2, 4, ... up to the device's rss_max_indirection_table_length)")
        }
        let pairs = queues ?? cpus.flatMap { try? Lists.cpus($0, option: "--cpus").count } ?? 1
        if let bad = table.first(where: { $0 >= pairs }) {
          throw ValidationError("--rss-table: entry \(bad) names a queue past the \(pairs) queue pair(s); use entries 0 ... \(pairs - 1) or more --queues")
        }
        c.indirectionTable = table
      }
      if let h = rssHash {
        guard let bits = NetHashTypeNames.parse(h) else {
          throw ValidationError("--rss-hash \(h): use names among \(NetHashType.names.map(\.0).joined(separator: ",")), comma-separated")
        }
        c.hashTypes = bits
      }
      r = c
    }
    var mac: MACAddress? = nil
    if let m = self.mac {
      guard let a = MACAddress(parsing: m), !a.isMulticast else { throw ValidationError("--mac \(m): give a unicast address such as 02:00:00:00:00:01") }
      mac = a
    }
    var macs: [MACAddress]? = nil
    if let f = macFilter {
      macs = []
      if f != "none" {
        for part in f.split(separator: ",", omittingEmptySubsequences: false) {
          guard let a = MACAddress(parsing: String(part)) else { throw ValidationError("--mac-filter: \(part) is not a MAC address (aa:bb:cc:dd:ee:ff)") }
          macs!.append(a)
        }
      }
    }
    let vlans = try vlanFilter.map { v in try Lists.table(v, option: "--vlan-filter", in: 0...4095).map { UInt16($0) } }
    return (r, mac, macs, vlans)
  }

  func run() throws {
    let level = Logger.Level(rawValue: logLevel) ?? .warning
    LoggingSystem.bootstrap { label in
      var h = StreamLogHandler.standardError(label: label)
      h.logLevel = level
      return h
    }
    StopSignal.install()
    var options = PortOptions()
    let pinned = try cpus.map { try Lists.cpus($0, option: "--cpus") }
    options.queues = queues ?? pinned?.count ?? 1
    options.rxDescriptors = rxd
    options.txDescriptors = txd
    let steer = try steering()
    options.rss = steer.rss
    options.macAddress = steer.mac
    options.macFilter = steer.macFilter
    options.vlanFilter = steer.vlans
    // Filters only matter with promiscuous mode off (§5.1.6.5.1).
    options.promiscuous = !noPromisc && steer.macFilter == nil && steer.vlans == nil
    options.kernelFallback = !noFallback
    options.allowNoIOMMU = allowNoIOMMU
    options.checksumOffload = !noCsumOffload && !noOffloads
    options.segmentationOffload = !noTSO && !noOffloads
    options.mergeableReceiveBuffers = noMergeableBuffers ? false : (mergeableBuffers ? true : nil)
    options.bufferSize = bufferSize
    options.eventIndex = !noEventIndex
    options.queuePolicy = NetQueuePolicy(rxRefillThreshold: rxRefill, txReclaimBelow: txReclaimBelow, txKickBatch: txKickBatch)
    options.ringLayout = ring == .split ? .split : ring == .packed ? .packed : nil
    options.logger = Logger(label: "vio-fwd")
    let addresses = ports.map { try! PortAddress(parsing: $0) }  // validated above

    var group: PortGroup
    do throws(VirtioError) {
      group = try PortGroup.open(addresses, options: options)
    } catch {
      Console.error(error.message)
      throw ExitCode(error.code == .invalidArgument ? 64 : 1)
    }
    // A burst must fit in every ring, as opened (a device may have smaller rings than asked).
    for p in group.ports where burst > p.maxBurst {
      Console.error("--burst \(burst) is larger than port \(p.address)'s rings (RX \(p.rxRingSize), TX \(p.txRingSize)); use --burst \(p.maxBurst) or less")
      throw ExitCode(64)
    }
    if (mode == .txonly || txFirst) && pktSize > group.bufferSize - PortGroup.headroom {
      Console.error("--pkt-size \(pktSize) does not fit one buffer of \(group.bufferSize) bytes (txonly sends one-buffer frames); use a smaller --pkt-size or a larger --buffer-size")
      throw ExitCode(64)
    }
    if mode == .txonly || txFirst, let p = group.ports.first(where: { pktSize > PortOptions.frameBytes(mtu: $0.mtu) - 4 }) {
      Console.error("--pkt-size \(pktSize) is larger than port \(p.address)'s MTU \(p.mtu) allows (\(p.mtu + 14)); use a smaller --pkt-size")
      throw ExitCode(64)
    }
    let exporter: MetricsRun?
    do throws(MetricsServerError) {
      exporter = try MetricsRun.start(metrics, tool: "vio-fwd")
    } catch {
      Console.error(error.message)
      throw ExitCode(1)
    }
    if let e = exporter?.server { Console.note("metrics: \(e.endpoint)") }
    var run = settings
    run.cpus = pinned
    run.vlanFilter = steer.vlans ?? []
    let code = try Run(settings: run, metrics: exporter).execute(&group)
    if code != 0 { throw ExitCode(code) }
  }

  /// A receive-only sink pauses after an empty round: no frame waits on it
  /// (a few dozen cycles on hardware), and under TCG it gives the device
  /// model the CPU (in-guest txonly -> rxonly, paired against --idle-pause 0:
  /// 1.28x split, 1.42x packed, 7 of 7 runs each; docs/PERFORMANCE.md). A
  /// forwarder does not: the pause lengthens every frame's round trip (io:
  /// 0.90x split, 0.98x packed in the notification study).
  static func defaultIdlePauses(_ mode: Mode) -> Int { mode == .rxonly ? 1 : 0 }

  var settings: Settings {
    Settings(
      mode: mode, burst: burst, pktSize: pktSize, durationNanoseconds: Numbers.duration(duration) ?? 0,
      statsPeriodNanoseconds: Numbers.duration(statsPeriod) ?? 0, json: json, wait: wait,
      idlePolls: wait == .interrupt ? 1 : idlePolls, idlePauses: idlePause ?? Self.defaultIdlePauses(mode), txRetries: txRetries, statsFile: statsFile,
      testOnlyNeedsResetAfter: testOnlyNeedsResetAfter, tagReceive: tagReceive, testOnlyClearFiltersAfter: testOnlyClearFiltersAfter,
      txFirst: txFirst)
  }
}

/// What the run needs from the command line.
struct Settings: Sendable {
  var mode: Mode
  var burst: Int
  var pktSize: Int
  /// 0: until SIGINT/SIGTERM.
  var durationNanoseconds: UInt64
  /// 0: no live lines.
  var statsPeriodNanoseconds: UInt64
  var json: Bool
  var wait: WaitMode
  var idlePolls: Int
  /// --idle-pause: PAUSE instructions after a round that moved nothing.
  var idlePauses: Int = 0
  var txRetries: Int
  var statsFile: String?
  var testOnlyNeedsResetAfter: Int? = nil
  /// --tag-rx: the source MAC of each forwarded frame says its queue and hash.
  var tagReceive = false
  var testOnlyClearFiltersAfter: Int? = nil
  /// --vlan-filter's VLAN ids (what --test-only-clear-filters-after removes).
  var vlanFilter: [UInt16] = []
  /// --tx-first: one burst of template frames out of every port before forwarding starts.
  var txFirst = false
  /// Worker q's CPU (--cpus), or nil: not pinned.
  var cpus: [Int]? = nil
}

enum Console {
  static func error(_ s: String) { line("vio-fwd: error: \(s)", fd: 2) }
  static func note(_ s: String) { line("vio-fwd: \(s)", fd: 2) }
  static func out(_ s: String) { line(s, fd: 1) }

  /// One write(2) per line, so lines from threads and the log never interleave mid-line.
  static func line(_ s: String, fd: Int32) {
    var bytes = Array((s + "\n").utf8)
    var off = 0
    while off < bytes.count {
      let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
      if n <= 0 { if errno == EINTR { continue } else { return } }
      off += n
    }
  }
}
