import VirtioCore
import VirtioOS

extension VFIOPCITransport {
  /// The CPU Linux delivers queue `index`'s MSI-X interrupt to: vfio-pci names
  /// the vector's IRQ `vfio-msix[V](DDDD:BB:DD.F)` in /proc/interrupts, and
  /// /proc/irq/N/effective_affinity_list says where it is sent (the first CPU
  /// of that list). nil: no vector, or the kernel does not say.
  public func interruptCPU(queue index: Int) -> Int? {
    guard let v = vector(ofQueue: index) else { return nil }
    return InterruptAffinity.cpu(ofIRQNamed: "vfio-msix[\(v)](\(address))")
  }
}

/// Where the kernel sends an IRQ, read from procfs (control path only).
enum InterruptAffinity {
  static func cpu(ofIRQNamed name: String) -> Int? {
    guard let table = Sys.readText("/proc/interrupts"), let irq = irq(named: name, in: table),
      let list = Sys.readText("/proc/irq/\(irq)/effective_affinity_list")
    else { return nil }
    return firstCPU(of: list)
  }

  /// The IRQ number of the /proc/interrupts line that names `name` (" 57:  0  3043  IR-PCI-MSI ... vfio-msix[1](0000:00:02.0)").
  static func irq(named name: String, in table: String) -> Int? {
    for line in table.split(separator: "\n") where line.contains(name) {
      guard let colon = line.firstIndex(of: ":") else { return nil }
      return Int(line[..<colon].trimmingCharacters(in: " "))
    }
    return nil
  }

  /// The first CPU of a cpulist ("1", "0-1", "2,5").
  static func firstCPU(of list: String) -> Int? { Int(String(list.prefix(while: { $0.isNumber }))) }
}

extension Substring {
  fileprivate func trimmingCharacters(in set: Character) -> Substring {
    var s = self
    while s.first == set { s = s.dropFirst() }
    while s.last == set { s = s.dropLast() }
    return s
  }
}
