import VirtioCore
import Glibc
import VirtioOS

internal import CVirtioSys

/// Which type1 IOMMU model the container runs (VFIO_SET_IOMMU argument).
public enum VFIOIOMMUType: Sendable, CustomStringConvertible {
  /// VFIO_TYPE1v2_IOMMU: unmaps must match whole mappings; the preferred model.
  case type1v2
  /// VFIO_TYPE1_IOMMU: the original model (fallback).
  case type1
  /// VFIO_NOIOMMU_IOMMU: no IOMMU at all (vfio's enable_unsafe_noiommu_mode):
  /// no DMA mapping, the device uses physical addresses.
  case noIOMMU

  public var description: String {
    switch self {
    case .type1v2: "TYPE1v2"
    case .type1: "TYPE1"
    case .noIOMMU: "NOIOMMU"
    }
  }

  var ioctlArgument: UInt {
    switch self {
    case .type1v2: VIO_VFIO_TYPE1v2_IOMMU
    case .type1: VIO_VFIO_TYPE1_IOMMU
    case .noIOMMU: VIO_VFIO_NOIOMMU_IOMMU
    }
  }
}

/// What VFIO_IOMMU_GET_INFO reports about the container's IOMMU.
public struct VFIOIOMMUInfo: Sendable {
  /// Bitmap of the IOMMU page sizes (bit n set: 2^n bytes).
  public var pageSizes: UInt64
  /// IOVA ranges the container accepts (inclusive ends); empty when the kernel did not say.
  public var iovaRanges: [ClosedRange<UInt64>]
  /// How many more DMA mappings the container accepts (dma_entry_limit), when reported.
  public var dmaMappingsAvailable: UInt32?

  /// Smallest IOMMU page size (4 KiB when unknown).
  public var minimumPageSize: UInt64 {
    pageSizes == 0 ? 4096 : UInt64(1) << UInt64(pageSizes.trailingZeroBitCount)
  }
}

/// A VFIO container (/dev/vfio/vfio): the IOMMU context that groups join and
/// DMA mappings live in. Owns its descriptor; closing it drops every mapping.
///
/// Reference: Documentation/driver-api/vfio.rst ("VFIO Usage Example").
public struct VFIOContainer: ~Copyable {
  let fd: OwnedFD
  public private(set) var iommuType: VFIOIOMMUType?

  /// Opens /dev/vfio/vfio and checks the API version and type1 support
  /// (`noIOMMU`: the no-IOMMU model instead).
  static func open(noIOMMU: Bool = false) throws(VirtioError) -> VFIOContainer {
    let path = "/dev/vfio/vfio"
    let raw: Int32
    do {
      raw = try Sys.open(path, O_RDWR)
    } catch {
      throw openError(error, path: path)
    }
    let container = VFIOContainer(fd: OwnedFD(adopting: raw), iommuType: nil)
    let version = (try? Sys.ioctl(raw, VIO_VFIO_GET_API_VERSION, value: 0, "VFIO_GET_API_VERSION")) ?? -1
    guard version == VIO_VFIO_API_VERSION else {
      throw VirtioError(.vfioUnavailable, "\(path) speaks VFIO API version \(version), this driver needs \(VIO_VFIO_API_VERSION); use a newer kernel")
    }
    if noIOMMU {
      guard container.supports(.noIOMMU) else {
        throw VirtioError(
          .noIOMMU,
          "the VFIO container offers no no-IOMMU model: vfio is not in no-IOMMU mode; set it (`echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode`, a kernel built with CONFIG_VFIO_NOIOMMU) and bind again with `vio-bind bind --no-iommu`, or use uio_pci_generic")
      }
      return container
    }
    guard container.supports(.type1v2) || container.supports(.type1) else {
      throw VirtioError(
        .noIOMMU, "the VFIO container offers no type1 IOMMU; load vfio_iommu_type1 (`modprobe vfio_iommu_type1`) and make sure an IOMMU is enabled (intel_iommu=on)")
    }
    return container
  }

  /// What failing to open /dev/vfio/vfio means, and what to do about it.
  static func openError(_ error: SysError, path: String) -> VirtioError {
    switch error.errno {
    case ENOENT, ENODEV, ENXIO:
      return VirtioError(
        .vfioUnavailable, "\(path) does not exist: the vfio modules are not loaded; run `modprobe vfio-pci`", errno: error.errno)
    case EACCES, EPERM:
      return VirtioError(
        .permissionDenied,
        "no permission to open \(path): run as root, or allow your user with a udev rule (SUBSYSTEM==\"vfio\", MODE=\"0660\", GROUP=\"<group>\")",
        errno: error.errno)
    default:
      return VirtioError(.transport, "cannot open \(path): \(error.reason)", errno: error.errno)
    }
  }

  /// VFIO_CHECK_EXTENSION for a type1 model.
  func supports(_ type: VFIOIOMMUType) -> Bool {
    ((try? Sys.ioctl(fd.raw, VIO_VFIO_CHECK_EXTENSION, value: type.ioctlArgument, "VFIO_CHECK_EXTENSION")) ?? 0) > 0
  }

  /// VFIO_SET_IOMMU(VFIO_NOIOMMU_IOMMU): a container with no IOMMU behind it
  /// (no DMA map ioctl; needs CAP_SYS_RAWIO). Needs a group in the container.
  mutating func setNoIOMMU() throws(VirtioError) -> VFIOIOMMUType {
    do {
      _ = try Sys.ioctl(fd.raw, VIO_VFIO_SET_IOMMU, value: VIO_VFIO_NOIOMMU_IOMMU, "VFIO_SET_IOMMU(NOIOMMU)")
    } catch {
      throw VirtioError(
        error.errno == EPERM ? .permissionDenied : .transport,
        "VFIO_SET_IOMMU(NOIOMMU) failed (\(error.reason)); VFIO's no-IOMMU mode needs root (CAP_SYS_RAWIO)", errno: error.errno)
    }
    iommuType = .noIOMMU
    return .noIOMMU
  }

  /// VFIO_SET_IOMMU: TYPE1v2 when offered, else TYPE1. Needs a group in the container.
  mutating func setIOMMU() throws(VirtioError) -> VFIOIOMMUType {
    if let t = iommuType { return t }
    var lastError: SysError? = nil
    for type in [VFIOIOMMUType.type1v2, .type1] where supports(type) {
      do {
        _ = try Sys.ioctl(fd.raw, VIO_VFIO_SET_IOMMU, value: type.ioctlArgument, "VFIO_SET_IOMMU(\(type))")
        iommuType = type
        return type
      } catch {
        lastError = error
      }
    }
    throw VirtioError(
      .noIOMMU, "VFIO_SET_IOMMU failed (\(lastError?.reason ?? "no type1 model offered")); check that the IOMMU is enabled (intel_iommu=on) and vfio_iommu_type1 is loaded",
      errno: lastError?.errno)
  }

  /// VFIO_IOMMU_GET_INFO with its capability chain (IOVA ranges, DMA entries left).
  func iommuInfo() -> VFIOIOMMUInfo {
    var info = VFIOIOMMUInfo(pageSizes: 0, iovaRanges: [], dmaMappingsAvailable: nil)
    // First call with the bare struct to learn the size including capabilities.
    var head = vfio_iommu_type1_info()
    head.argsz = UInt32(MemoryLayout<vfio_iommu_type1_info>.size)
    guard (try? Sys.ioctl(fd.raw, VIO_VFIO_IOMMU_GET_INFO, &head, "VFIO_IOMMU_GET_INFO")) != nil else { return info }
    if head.flags & VIO_VFIO_IOMMU_INFO_PGSIZES != 0 { info.pageSizes = head.iova_pgsizes }
    let total = Int(head.argsz)
    guard head.flags & VIO_VFIO_IOMMU_INFO_CAPS != 0, total > MemoryLayout<vfio_iommu_type1_info>.size, total < 1 << 20 else {
      return info
    }
    // SAFETY: a zeroed buffer of `total` bytes, 8-byte aligned, read only within
    // `total`; capability offsets are checked against it before each load.
    let buf = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 8)
    defer { buf.deallocate() }
    buf.initializeMemory(as: UInt8.self, repeating: 0, count: total)
    buf.storeBytes(of: UInt32(total), as: UInt32.self)
    guard (try? Sys.ioctl(fd.raw, VIO_VFIO_IOMMU_GET_INFO, buf, "VFIO_IOMMU_GET_INFO(caps)")) != nil else { return info }
    var offset = Int(buf.loadUnaligned(fromByteOffset: 16, as: UInt32.self))  // cap_offset
    var hops = 0
    while offset >= MemoryLayout<vfio_iommu_type1_info>.size, offset + 8 <= total, hops < 32 {
      // vfio_info_cap_header: u16 id, u16 version, u32 next.
      let id = buf.loadUnaligned(fromByteOffset: offset, as: UInt16.self)
      let next = Int(buf.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
      if id == VIO_VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, offset + 16 <= total {
        let n = Int(buf.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self))
        for i in 0..<n {
          let at = offset + 16 + i * 16
          guard at + 16 <= total else { break }
          let start = buf.loadUnaligned(fromByteOffset: at, as: UInt64.self)
          let end = buf.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self)
          if start <= end { info.iovaRanges.append(start...end) }
        }
      } else if id == VIO_VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, offset + 12 <= total {
        info.dmaMappingsAvailable = buf.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
      }
      if next == 0 || next <= offset { break }
      offset = next
      hops += 1
    }
    return info
  }
}
