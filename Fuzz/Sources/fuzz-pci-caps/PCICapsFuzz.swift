import FuzzSupport
import VirtioCore
import VirtioVFIO

// The PCI capability walk (§4.1.4; PCI Local Bus 6.7) over any config space a
// device may present: any status, capabilities pointer, loops, overlapping or
// truncated capabilities, virtio caps with any cfg_type / bar / length, MSI-X.
//
// Checked: no trap and no read outside the snapshot; the walk ends (at most
// 48 capabilities); what it reports points inside config space, names a
// valid BAR, and requireModern / summary do not trap either.
//
// Input: the config space itself (shorter than 256 bytes must be refused).

@_cdecl("LLVMFuzzerTestOneInput")
public func pciCapsFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(data, size)
  let config = input.rest()
  do throws(VirtioError) {
    let caps = try VirtioPCICapabilities.parse(config: config)
    require(config.count >= 256, "a \(config.count)-byte snapshot was parsed")
    require(caps.walked.count <= 48, "walked \(caps.walked.count) capabilities")
    for w in caps.walked { require(w.offset >= 0x40 && w.offset <= 0xFC, "capability at 0x\(String(w.offset, radix: 16))") }
    for loc in [caps.common, caps.notify, caps.isr, caps.device].compactMap({ $0 }) {
      require(loc.bar >= 0 && loc.bar <= 5, "structure in BAR \(loc.bar)")
      require(loc.capabilityOffset >= 0x40 && loc.capabilityOffset + 16 <= 256, "cap at \(loc.capabilityOffset)")
    }
    if let m = caps.msix {
      require(m.tableSize >= 1 && m.tableSize <= 2048, "MSI-X table of \(m.tableSize)")
      require(m.tableBAR <= 7 && m.pbaBAR <= 7, "MSI-X BIR above 7")
    }
    if let p = caps.pciConfigAccess { require(p >= 0x40 && p + 16 <= 256, "pci-cfg cap at \(p)") }
    _ = caps.summary
    do throws(VirtioError) {
      try caps.requireModern(name: "fuzz")
      require(caps.common != nil && caps.notify != nil && caps.isr != nil && caps.device != nil, "modern without all four")
    } catch {
      _ = error.message
    }
  } catch {
    _ = error.message
  }
  return 0
}
