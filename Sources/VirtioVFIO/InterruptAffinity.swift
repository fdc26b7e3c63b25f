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
    guard let table = Sys.readText("/proc/interrupts") else { return nil }
    for line in table.split(separator: "\n") where line.contains(name) {
      guard let colon = line.firstIndex(of: ":"),
        let irq = Int(line[..<colon].trimmingCharacters(in: " ")),
        let list = Sys.readText("/proc/irq/\(irq)/effective_affinity_list")
      else { return nil }
      return Int(String(list.prefix(while: { $0.isNumber })))
    }
    return nil
  }
}

extension Substring {
  fileprivate func trimmingCharacters(in set: Character) -> Substring {
    var s = self
    while s.first == set { s = s.dropFirst() }
    while s.last == set { s = s.dropLast() }
    return s
  }
}
