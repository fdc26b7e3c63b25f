import VirtioCore
import VirtioOS
import VirtioSpec

/// Surprise removal over VFIO. When the function is hot-unplugged (QMP
/// `device_del`, a PCIe slot's attention button) or unbound, the kernel asks
/// the user to let it go through the device-request interrupt and waits —
/// until the process exits when nobody listens. The transport routes that
/// interrupt (and the error interrupt of a PCIe function) to one eventfd;
/// the owner watches it on its control path and calls `releaseRemovedDevice`.
/// A device already gone reads all-ones, like any removed PCI function.
extension VFIOPCITransport {
  /// Readable once the kernel asked for the device back (nil: no request channel).
  public var removalEventFD: Int32? { removalFD >= 0 ? removalFD : nil }

  /// The kernel asked for the device (the request or error interrupt fired),
  /// or its registers read all-ones (the function is gone), or it was released.
  /// Control path: one poll(2) and one register read.
  public func deviceRemoved() -> Bool {
    if released { return true }
    if removalFD >= 0 && Poll.readable(removalFD, timeoutMilliseconds: 0) == 1 { return true }
    return readsAllOnes()
  }

  /// A removed PCI function answers every read with all-ones; no virtio
  /// device sets every status bit (FAILED with DRIVER_OK, §2.1).
  func readsAllOnes() -> Bool {
    common.read8(CommonCfg.device_status) == 0xFF && common.read32(CommonCfg.device_feature) == 0xFFFF_FFFF
  }

  /// Lets the device go so its removal can complete, while the queues and
  /// pools in the DMA arena stay valid for their owners: §2.4 reset (when the
  /// device still answers, so it stops using rings and buffers), interrupts
  /// off, every BAR mapping replaced by memory that reads all-ones (other
  /// threads' doorbells write there harmlessly), the device file released.
  /// The MSI-X eventfds stay open (nothing signals them any more). Idempotent.
  public mutating func releaseRemovedDevice() {
    guard !released else { return }
    released = true
    if !readsAllOnes() {
      // §4.1.4.3.2: device_status ← 0; a short wait only, the kernel resets the function on release anyway.
      common.write8(CommonCfg.device_status, 0)
      var spins = 0
      while common.read8(CommonCfg.device_status) != 0 && spins < 100 {
        Sys.sleep(milliseconds: 1)
        spins += 1
      }
    }
    device.disableMSIX()
    bars.replaceWithInertMemory()
    for i in 0..<registers.notifyCount { registers.notifyAddresses[i] = nil }
    let closed = device.releaseDeviceFile()
    logger.warning(
      "device removed: queues stopped, device released to the kernel",
      metadata: ["released": "\(closed)", "interrupts_taken": "\((0..<interrupts.count).map { String(interrupts.taken(vector: $0)) }.joined(separator: ","))"])
  }
}
