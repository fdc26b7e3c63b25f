// The vhost-user protocol as Swift: request codes, header flags, protocol
// feature bits and the payloads this frontend sends and reads, with the field
// names of QEMU's docs/interop/vhost-user.rst ("Message Specification") and
// Linux's include/uapi/linux/vhost_types.h. All numbers are in the machine's
// native byte order (the spec's words); on every host DPDK and QEMU run on
// here that is little-endian, which the encoder spells out.

import VirtioCore

/// Front-end message types — vhost-user.rst "Front-end message types".
public enum VhostUserRequest: UInt32, Sendable, CustomStringConvertible {
  case GET_FEATURES = 1
  case SET_FEATURES = 2
  case SET_OWNER = 3
  case RESET_OWNER = 4
  case SET_MEM_TABLE = 5
  case SET_LOG_BASE = 6
  case SET_LOG_FD = 7
  case SET_VRING_NUM = 8
  case SET_VRING_ADDR = 9
  case SET_VRING_BASE = 10
  case GET_VRING_BASE = 11
  case SET_VRING_KICK = 12
  case SET_VRING_CALL = 13
  case SET_VRING_ERR = 14
  case GET_PROTOCOL_FEATURES = 15
  case SET_PROTOCOL_FEATURES = 16
  case GET_QUEUE_NUM = 17
  case SET_VRING_ENABLE = 18
  case SEND_RARP = 19
  case NET_SET_MTU = 20
  case SET_BACKEND_REQ_FD = 21
  case IOTLB_MSG = 22
  case SET_VRING_ENDIAN = 23
  case GET_CONFIG = 24
  case SET_CONFIG = 25
  case GET_INFLIGHT_FD = 31
  case SET_INFLIGHT_FD = 32
  case RESET_DEVICE = 34
  case VRING_KICK = 35
  case GET_MAX_MEM_SLOTS = 36
  case ADD_MEM_REG = 37
  case REM_MEM_REG = 38
  case SET_STATUS = 39
  case GET_STATUS = 40

  public var description: String { "VHOST_USER_" + (Self.names[rawValue] ?? "\(rawValue)") }

  static let names: [UInt32: String] = [
    1: "GET_FEATURES", 2: "SET_FEATURES", 3: "SET_OWNER", 4: "RESET_OWNER", 5: "SET_MEM_TABLE", 6: "SET_LOG_BASE",
    7: "SET_LOG_FD", 8: "SET_VRING_NUM", 9: "SET_VRING_ADDR", 10: "SET_VRING_BASE", 11: "GET_VRING_BASE",
    12: "SET_VRING_KICK", 13: "SET_VRING_CALL", 14: "SET_VRING_ERR", 15: "GET_PROTOCOL_FEATURES",
    16: "SET_PROTOCOL_FEATURES", 17: "GET_QUEUE_NUM", 18: "SET_VRING_ENABLE", 19: "SEND_RARP", 20: "NET_SET_MTU",
    21: "SET_BACKEND_REQ_FD", 22: "IOTLB_MSG", 23: "SET_VRING_ENDIAN", 24: "GET_CONFIG", 25: "SET_CONFIG",
    31: "GET_INFLIGHT_FD", 32: "SET_INFLIGHT_FD", 34: "RESET_DEVICE", 35: "VRING_KICK", 36: "GET_MAX_MEM_SLOTS",
    37: "ADD_MEM_REG", 38: "REM_MEM_REG", 39: "SET_STATUS", 40: "GET_STATUS",
  ]
}

/// Header `flags` — vhost-user.rst "Header".
public enum VhostUserHeaderFlags {
  /// Lower 2 bits: the protocol version, currently 1.
  public static let version: UInt32 = 0x1
  public static let versionMask: UInt32 = 0x3
  /// Bit 2: set on every reply from the back-end.
  public static let reply: UInt32 = 1 << 2
  /// Bit 3: the front-end asks for a REPLY_ACK (only with PROTOCOL_F_REPLY_ACK).
  public static let needReply: UInt32 = 1 << 3
}

/// Virtio feature bits with a vhost-user meaning.
public enum VhostUserFeature {
  /// VHOST_USER_F_PROTOCOL_FEATURES: the reused (legacy UNUSED) bit 30; the
  /// back-end supports GET/SET_PROTOCOL_FEATURES. Not a virtio feature.
  public static let protocolFeatures = 30
  /// VHOST_F_LOG_ALL (bit 26): dirty logging for migration. Not a virtio feature.
  public static let logAll = 26
}

/// Protocol feature bits — vhost-user.rst "Protocol features".
public enum VhostUserProtocolFeature {
  public static let mq = 0
  public static let logShmfd = 1
  public static let rarp = 2
  public static let replyAck = 3
  public static let mtu = 4
  public static let backendReq = 5
  public static let crossEndian = 6
  public static let cryptoSession = 7
  public static let pagefault = 8
  public static let config = 9
  public static let backendSendFD = 10
  public static let hostNotifier = 11
  public static let inflightShmfd = 12
  public static let resetDevice = 13
  public static let inbandNotifications = 14
  public static let configureMemSlots = 15
  public static let status = 16

  static let names: [Int: String] = [
    mq: "MQ", logShmfd: "LOG_SHMFD", rarp: "RARP", replyAck: "REPLY_ACK", mtu: "MTU", backendReq: "BACKEND_REQ",
    crossEndian: "CROSS_ENDIAN", cryptoSession: "CRYPTO_SESSION", pagefault: "PAGEFAULT", config: "CONFIG",
    backendSendFD: "BACKEND_SEND_FD", hostNotifier: "HOST_NOTIFIER", inflightShmfd: "INFLIGHT_SHMFD",
    resetDevice: "RESET_DEVICE", inbandNotifications: "INBAND_NOTIFICATIONS", configureMemSlots: "CONFIGURE_MEM_SLOTS",
    status: "STATUS",
  ]

  /// Names of the bits set in `mask`, for logs and error messages.
  public static func names(_ mask: UInt64) -> [String] {
    (0..<64).filter { mask & (1 << UInt64($0)) != 0 }.map { names[$0] ?? "bit\($0)" }
  }
}

/// Limits of the message formats.
public enum VhostUserLimits {
  /// Header: request, flags, size — three u32.
  public static let headerSize = 12
  /// VHOST_MEMORY_BASELINE_NREGIONS: regions in one SET_MEM_TABLE.
  public static let maxMemoryRegions = 8
  /// Largest payload this frontend accepts in a reply (VhostUserConfig: 12 + 256).
  public static let maxPayload = 12 + 256
  /// Config space bytes one GET_CONFIG can carry (VHOST_USER_MAX_CONFIG_SIZE).
  public static let maxConfigSize = 256
}

/// SET_VRING_KICK / CALL / ERR payload (a u64): bits 0–7 the vring index,
/// bit 8 the invalid-FD flag ("no descriptor: poll").
public enum VhostUserVringFD {
  public static let indexMask: UInt64 = 0xFF
  public static let noFD: UInt64 = 1 << 8
}

/// SET_VRING_BASE / GET_VRING_BASE `num` for a packed ring (vhost-user.rst,
/// "Vring descriptor indices for packed virtqueues"; DPDK and QEMU agree):
/// bits 0–14 the next descriptor index the back-end processes, bit 15 its wrap
/// counter. A split ring's `num` is the free-running avail index (bits 0–15).
public enum VhostUserVringBase {
  public static func encode(_ p: RingPosition, packed: Bool) -> UInt32 {
    packed ? UInt32(p.index & 0x7FFF) | (p.wrap ? 1 << 15 : 0) : UInt32(p.index)
  }
  public static func decode(_ num: UInt32, packed: Bool) -> RingPosition {
    packed
      ? RingPosition(index: UInt16(num & 0x7FFF), wrap: num & (1 << 15) != 0)
      : RingPosition(index: UInt16(truncatingIfNeeded: num), wrap: true)
  }
}

/// One region of VhostUserMemory — vhost-user.rst "Memory regions description";
/// Linux: struct vhost_memory_region (32 bytes).
public struct VhostUserMemoryRegion: Sendable, Equatable {
  /// guest address: the address descriptors use (here: the frontend's virtual address).
  public var guest_phys_addr: UInt64
  public var memory_size: UInt64
  /// user address: the address SET_VRING_ADDR uses (the frontend's virtual address).
  public var userspace_addr: UInt64
  /// Offset of the region inside the file descriptor sent with it.
  public var mmap_offset: UInt64
}

/// Byte-level encoding of messages and payloads (no unsafe struct punning).
public enum VhostUserWire {
  static func put32(_ b: inout [UInt8], _ v: UInt32) {
    for i in 0..<4 { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
  }
  static func put64(_ b: inout [UInt8], _ v: UInt64) {
    for i in 0..<8 { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
  }
  public static func get32(_ b: [UInt8], _ at: Int) -> UInt32 {
    var v: UInt32 = 0
    for i in 0..<4 { v |= UInt32(b[at + i]) << (8 * UInt32(i)) }
    return v
  }
  public static func get64(_ b: [UInt8], _ at: Int) -> UInt64 {
    var v: UInt64 = 0
    for i in 0..<8 { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
    return v
  }

  /// Header + payload.
  public static func message(_ request: VhostUserRequest, flags: UInt32, payload: [UInt8]) -> [UInt8] {
    var b: [UInt8] = []
    b.reserveCapacity(VhostUserLimits.headerSize + payload.count)
    put32(&b, request.rawValue)
    put32(&b, flags)
    put32(&b, UInt32(payload.count))
    b += payload
    return b
  }

  /// A single 64-bit integer.
  public static func u64(_ v: UInt64) -> [UInt8] {
    var b: [UInt8] = []
    put64(&b, v)
    return b
  }

  /// vhost_vring_state { index, num } — 8 bytes.
  public static func vringState(index: UInt32, num: UInt32) -> [UInt8] {
    var b: [UInt8] = []
    put32(&b, index)
    put32(&b, num)
    return b
  }

  /// vhost_vring_addr { index, flags, desc_user_addr, used_user_addr,
  /// avail_user_addr, log_guest_addr } — 40 bytes. Note the order: used
  /// before avail. For a packed ring, "used" is the device event suppression
  /// area and "avail" the driver's.
  public static func vringAddr(index: UInt32, flags: UInt32, desc: UInt64, used: UInt64, avail: UInt64, log: UInt64 = 0) -> [UInt8] {
    var b: [UInt8] = []
    put32(&b, index)
    put32(&b, flags)
    put64(&b, desc)
    put64(&b, used)
    put64(&b, avail)
    put64(&b, log)
    return b
  }

  /// VhostUserMemory { nregions, padding, regions[nregions] }.
  public static func memoryTable(_ regions: [VhostUserMemoryRegion]) -> [UInt8] {
    var b: [UInt8] = []
    put32(&b, UInt32(regions.count))
    put32(&b, 0)
    for r in regions {
      put64(&b, r.guest_phys_addr)
      put64(&b, r.memory_size)
      put64(&b, r.userspace_addr)
      put64(&b, r.mmap_offset)
    }
    return b
  }

  /// VhostUserConfig { offset, size, flags, region[size] } with a zeroed region.
  public static func configRequest(offset: UInt32, size: UInt32) -> [UInt8] {
    var b: [UInt8] = []
    put32(&b, offset)
    put32(&b, size)
    put32(&b, 0)
    b += [UInt8](repeating: 0, count: Int(size))
    return b
  }
}
