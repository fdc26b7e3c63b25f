import Foundation

/// Why a function is busy: what the host would lose if it were taken away.
public struct DeviceUsage: Sendable, Codable, Equatable {
  /// "/dev/vda1 on / (ext4)"
  public var mounts: [String] = []
  public var swap: [String] = []
  /// "default route via eth0", "10.0.2.0/24 on eth0"
  public var routes: [String] = []
  public var addresses: [String] = []
  /// "pid 412 (qemu) has /dev/vda open"
  public var openBy: [String] = []

  public init() {}
  public var inUse: Bool { !(mounts.isEmpty && swap.isEmpty && routes.isEmpty && addresses.isEmpty && openBy.isEmpty) }
  public var carriesDefaultRoute: Bool { routes.contains { $0.hasPrefix("default") } }
  public var reasons: [String] { mounts.map { "mounted: \($0)" } + swap.map { "swap: \($0)" } + routes + addresses.map { "address \($0)" } + openBy }
}

/// Read-only views of the running system (procfs, sysfs) that decide whether
/// a device is in use. A different root lets tests point it at a fake tree.
public struct SystemView: Sendable {
  public var procRoot: String
  public var sysRoot: String
  public var devRoot: String

  public init(procRoot: String = "/proc", sysRoot: String = "/sys", devRoot: String = "/dev") {
    self.procRoot = procRoot
    self.sysRoot = sysRoot
    self.devRoot = devRoot
  }

  public func usage(netInterfaces: [String], blockDevices: [String], vfioGroup: Int?) -> DeviceUsage {
    var u = DeviceUsage()
    let blockNames = blockDevices.flatMap { [$0] + partitionsAndHolders(of: $0) }
    let majorMinors = Set(blockNames.compactMap { read("\(sysRoot)/class/block/\($0)/dev") })
    // Mounts: /proc/self/mountinfo field 3 is major:minor of the source.
    for line in lines("\(procRoot)/self/mountinfo") {
      let f = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
      guard f.count > 4, majorMinors.contains(f[2]) else { continue }
      let dash = f.firstIndex(of: "-")
      let source = dash.flatMap { $0 + 2 < f.count ? f[$0 + 2] : nil } ?? f[2]
      let fstype = dash.flatMap { $0 + 1 < f.count ? f[$0 + 1] : nil } ?? "?"
      u.mounts.append("\(source) on \(f[4]) (\(fstype))")
    }
    for line in lines("\(procRoot)/swaps").dropFirst() {
      guard let dev = line.split(separator: " ").first.map(String.init) else { continue }
      if blockNames.contains((dev as NSString).lastPathComponent) { u.swap.append(dev) }
    }
    for ifname in netInterfaces {
      u.routes += routes(on: ifname)
      u.addresses += addresses(on: ifname)
    }
    // A group's node: /dev/vfio/N, or /dev/vfio/noiommu-N in VFIO's no-IOMMU mode.
    let groupNodes = vfioGroup.map { ["\(devRoot)/vfio/\($0)", "\(devRoot)/vfio/noiommu-\($0)"] } ?? []
    let devPaths = Set(blockNames.map { "\(devRoot)/\($0)" } + groupNodes)
    if !devPaths.isEmpty { u.openBy = openers(of: devPaths) }
    return u
  }

  /// Partitions (vda1, …) and stacked devices (dm-0, md0) built on `disk`.
  func partitionsAndHolders(of disk: String) -> [String] {
    let base = "\(sysRoot)/class/block/\(disk)"
    let parts = (try? FileManager.default.contentsOfDirectory(atPath: base))?.filter { $0.hasPrefix(disk) } ?? []
    var out = parts
    for d in [disk] + parts {
      out += (try? FileManager.default.contentsOfDirectory(atPath: "\(sysRoot)/class/block/\(d)/holders")) ?? []
    }
    return out
  }

  /// IPv4 routes from /proc/net/route and IPv6 from /proc/net/ipv6_route.
  func routes(on ifname: String) -> [String] {
    var out: [String] = []
    for line in lines("\(procRoot)/net/route").dropFirst() {
      let f = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).map(String.init)
      guard f.count > 7, f[0] == ifname else { continue }
      if f[1] == "00000000" && f[7] == "00000000" {
        out.append("default route via \(ifname)")
      } else {
        out.append("route \(ipv4(hexLE: f[1]))/\(maskBits(hexLE: f[7])) on \(ifname)")
      }
    }
    for line in lines("\(procRoot)/net/ipv6_route") {
      let f = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
      guard f.count >= 10, f[9] == ifname else { continue }
      if f[0] == String(repeating: "0", count: 32) && f[1] == "00000000" && f[4] != String(repeating: "0", count: 32) {
        out.append("default IPv6 route via \(ifname)")
      }
    }
    return out
  }

  /// IPv4 addresses from /proc/net/fib_trie is awkward; use getifaddrs.
  func addresses(on ifname: String) -> [String] {
    var out: [String] = []
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return [] }
    defer { freeifaddrs(list) }
    var p: UnsafeMutablePointer<ifaddrs>? = first
    while let a = p {
      defer { p = a.pointee.ifa_next }
      guard String(cString: a.pointee.ifa_name) == ifname, let sa = a.pointee.ifa_addr else { continue }
      let family = Int32(sa.pointee.sa_family)
      guard family == AF_INET || family == AF_INET6 else { continue }
      var host = [CChar](repeating: 0, count: 64)
      let len = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
      if getnameinfo(sa, len, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
        let s = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if !s.hasPrefix("fe80") { out.append("\(s) on \(ifname)") }
      }
    }
    return out
  }

  /// Processes with one of `paths` open (scans /proc/<pid>/fd).
  func openers(of paths: Set<String>) -> [String] {
    var out: [String] = []
    let me = String(getpid())
    for pid in (try? FileManager.default.contentsOfDirectory(atPath: procRoot)) ?? [] where pid.allSatisfy(\.isNumber) && pid != me {
      let fdDir = "\(procRoot)/\(pid)/fd"
      guard let fds = try? FileManager.default.contentsOfDirectory(atPath: fdDir) else { continue }
      var hit: Set<String> = []
      for fd in fds {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDir)/\(fd)"), paths.contains(target) {
          hit.insert(target)
        }
      }
      let comm = read("\(procRoot)/\(pid)/comm") ?? "?"
      for t in hit.sorted() { out.append("pid \(pid) (\(comm)) has \(t) open") }
    }
    return out
  }

  func read(_ path: String) -> String? {
    (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
  }
  func lines(_ path: String) -> [String] {
    (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? []
  }

  func ipv4(hexLE: String) -> String {
    guard let v = UInt32(hexLE, radix: 16) else { return hexLE }
    return [v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, v >> 24].map { String($0) }.joined(separator: ".")
  }
  func maskBits(hexLE: String) -> Int { UInt32(hexLE, radix: 16).map { $0.nonzeroBitCount } ?? 0 }
}
