import Foundation

/// One line of `vio-bind check`: what was looked at, whether it is fine, and
/// what to do when it is not.
public struct PreflightItem: Sendable, Codable, Equatable {
  public enum Level: String, Sendable, Codable { case ok, warning, failure }
  public var name: String
  public var level: Level
  public var detail: String
  /// What the user must do (empty when fine).
  public var advice: String

  public init(name: String, level: Level, detail: String, advice: String) {
    self.name = name
    self.level = level
    self.detail = detail
    self.advice = advice
  }
}

/// The machine-wide checks that decide whether VFIO can work here.
public enum Preflight {
  public static func run(sysRoot: String = "/sys", devRoot: String = "/dev", procRoot: String = "/proc") -> [PreflightItem] {
    var items: [PreflightItem] = []
    let fm = FileManager.default
    let groups = (try? fm.contentsOfDirectory(atPath: "\(sysRoot)/kernel/iommu_groups")) ?? []
    let cmdline = (try? String(contentsOfFile: "\(procRoot)/cmdline", encoding: .utf8)) ?? ""
    if groups.isEmpty {
      items.append(
        PreflightItem(
          name: "iommu", level: .failure, detail: "no IOMMU groups in \(sysRoot)/kernel/iommu_groups",
          advice:
            "enable an IOMMU: boot with intel_iommu=on (or amd_iommu=on); in a VM give it a vIOMMU (QEMU: -device intel-iommu,intremap=on,caching-mode=on and iommu_platform=on on the virtio devices). Without one, the library falls back to the kernel drivers, or, opted in (`vio-bind bind --no-iommu`, the tools' --allow-no-iommu), drives the functions from this process with physical addresses (vfio-pci in no-IOMMU mode, or uio_pci_generic)"))
    } else {
      items.append(PreflightItem(name: "iommu", level: .ok, detail: "\(groups.count) IOMMU groups; kernel command line: \(cmdline.trimmingCharacters(in: .whitespacesAndNewlines))", advice: ""))
    }
    let vfioLoaded = fm.fileExists(atPath: "\(sysRoot)/bus/pci/drivers/vfio-pci")
    let container = fm.fileExists(atPath: "\(devRoot)/vfio/vfio")
    if vfioLoaded && container {
      items.append(PreflightItem(name: "vfio-modules", level: .ok, detail: "vfio-pci loaded, \(devRoot)/vfio/vfio present", advice: ""))
    } else {
      items.append(
        PreflightItem(
          name: "vfio-modules", level: .failure,
          detail: "vfio-pci \(vfioLoaded ? "loaded" : "not loaded"), \(devRoot)/vfio/vfio \(container ? "present" : "missing")",
          advice: "run `modprobe vfio-pci` (and add vfio-pci to /etc/modules-load.d/ to load it at boot)"))
    }
    // /dev/vfio/N permissions for the user running the tools.
    let vfioNodes = ((try? fm.contentsOfDirectory(atPath: "\(devRoot)/vfio")) ?? []).filter { $0 != "vfio" }.sorted()
    if vfioNodes.isEmpty {
      items.append(PreflightItem(name: "vfio-permissions", level: .ok, detail: "no device bound to vfio-pci yet", advice: ""))
    } else {
      let denied = vfioNodes.filter { access("\(devRoot)/vfio/\($0)", R_OK | W_OK) != 0 }
      items.append(
        denied.isEmpty
          ? PreflightItem(name: "vfio-permissions", level: .ok, detail: "groups \(vfioNodes.joined(separator: ", ")) readable and writable", advice: "")
          : PreflightItem(
            name: "vfio-permissions", level: .failure, detail: "no read/write access to \(denied.map { "\(devRoot)/vfio/\($0)" }.joined(separator: ", "))",
            advice: "install udev/60-vio-vfio.rules (docs/INSTALL.md) to give the group to your user, or run as root"))
    }
    // Locked memory: VFIO pins every DMA page.
    var lim = rlimit()
    getrlimit(__rlimit_resource_t(8), &lim)  // RLIMIT_MEMLOCK (8 on Linux; the macro does not import)
    let unlimited = lim.rlim_cur == rlim_t.max  // RLIM_INFINITY
    let mib = unlimited ? Int.max : Int(lim.rlim_cur >> 20)
    if getuid() == 0 || unlimited || mib >= 256 {
      items.append(PreflightItem(name: "memlock", level: .ok, detail: unlimited ? "unlimited" : (getuid() == 0 ? "root (CAP_IPC_LOCK)" : "\(mib) MiB"), advice: ""))
    } else {
      items.append(
        PreflightItem(
          name: "memlock", level: .warning, detail: "RLIMIT_MEMLOCK is \(mib) MiB; DMA memory beyond it cannot be pinned",
          advice: "raise it: `ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd unit, or memlock in /etc/security/limits.conf"))
    }
    let hp = "\(sysRoot)/kernel/mm/hugepages/hugepages-2048kB"
    let free = (try? String(contentsOfFile: "\(hp)/free_hugepages", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
    let total = (try? String(contentsOfFile: "\(hp)/nr_hugepages", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
    items.append(
      free > 0
        ? PreflightItem(name: "hugepages", level: .ok, detail: "\(free) of \(total) 2 MiB pages free", advice: "")
        : PreflightItem(
          name: "hugepages", level: .warning, detail: "no free 2 MiB hugepages (\(total) reserved)",
          advice: "optional but faster: `echo 64 > /proc/sys/vm/nr_hugepages` and mount hugetlbfs on /dev/hugepages; without them DMA memory uses 4 KiB pages"))
    return items
  }
}
