/// The one error type of the driver stack: a code to switch on, the errno when a
/// system call failed, and a sentence that says what happened and what to do.
public struct VirtioError: Error, Sendable, CustomStringConvertible, Equatable {
  public enum Code: String, Sendable {
    /// FEATURES_OK did not stick, or the device lacks a feature the driver requires.
    case negotiationFailed
    /// A required feature is missing from the device's offer.
    case missingFeatures
    /// The device did not come out of reset.
    case resetTimeout
    /// The device set DEVICE_NEEDS_RESET or FAILED.
    case deviceFailed
    /// config_generation kept changing while the driver read the config.
    case configUnstable
    /// A queue could not be set up (size 0, too large, already enabled, vector refused).
    case queueSetup
    /// A queue stopped trusting its device.
    case queueBroken
    /// Out of DMA memory or mapping failed.
    case dmaAllocation
    /// A request or argument the caller gave is invalid.
    case invalidArgument
    /// The transport could not reach the device (VFIO, mapping, permissions, ...).
    case transport
    /// Waiting on the device took longer than allowed.
    case timeout
    /// The transport, device or kernel cannot do what was asked (a feature, O_DIRECT, io_uring, reconnect over VFIO).
    case unsupported
    /// No such file, device, socket or PCI function.
    case notFound
    /// A system call failed in a way no other code covers.
    case system
    /// A request completed with an error status (BlockIO's async layer).
    case ioFailed
    /// A request was refused before submission: unaligned, out of range, read-only … (BlockIO's async layer).
    case refused
    // Added with the VFIO-PCI transport (issue 3): setup failures a user acts on.
    /// No IOMMU (no /sys/kernel/iommu_groups, or the function has no group).
    case noIOMMU
    /// The vfio / vfio-pci modules are not loaded (/dev/vfio/vfio missing).
    case vfioUnavailable
    /// A function of the IOMMU group is bound to a driver other than vfio-pci.
    case groupNotViable
    /// The group or device is already in use (EBUSY).
    case deviceBusy
    /// The process may not open the VFIO group (EACCES / EPERM).
    case permissionDenied
    /// Pinning DMA memory failed against the locked-memory limit.
    case memlockLimit
  }

  public var code: Code
  /// errno of the failed system call, when there was one.
  public var errno: Int32?
  public var message: String

  public init(_ code: Code, _ message: String, errno: Int32? = nil) {
    self.code = code
    self.message = message
    self.errno = errno
  }

  public var description: String { message }
}
