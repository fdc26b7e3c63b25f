import Synchronization
import VirtioCore
import VirtioNet
import VirtioSim
import VirtioSpec

/// virtio_net_config bytes (§5.1.4) for a `SimTransport`.
public enum NetSimConfig {
  public static func bytes(
    mac: [UInt8] = [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF], status: UInt16 = NetStatus.linkUp, maxPairs: UInt16 = 1,
    mtu: UInt16 = 1500, rssMaxKeySize: UInt8 = 40, rssMaxIndirectionTableLength: UInt16 = 128,
    supportedHashTypes: UInt32 = NetHashType.ipv4 | NetHashType.tcpv4 | NetHashType.udpv4 | NetHashType.ipv6 | NetHashType.tcpv6 | NetHashType.udpv6
  ) -> [UInt8] {
    precondition(mac.count == 6)
    var b = [UInt8](repeating: 0, count: 24)
    typealias O = VirtioNetConfig.Offset
    for i in 0..<6 { b[O.mac + i] = mac[i] }
    b[O.status] = UInt8(status & 0xFF)
    b[O.status + 1] = UInt8(status >> 8)
    b[O.max_virtqueue_pairs] = UInt8(maxPairs & 0xFF)
    b[O.max_virtqueue_pairs + 1] = UInt8(maxPairs >> 8)
    b[O.mtu] = UInt8(mtu & 0xFF)
    b[O.mtu + 1] = UInt8(mtu >> 8)
    b[O.rss_max_key_size] = rssMaxKeySize
    b[O.rss_max_indirection_table_length] = UInt8(rssMaxIndirectionTableLength & 0xFF)
    b[O.rss_max_indirection_table_length + 1] = UInt8(rssMaxIndirectionTableLength >> 8)
    for i in 0..<4 { b[O.supported_hash_types + i] = UInt8(truncatingIfNeeded: supportedHashTypes >> (8 * UInt32(i))) }
    return b
  }
}

/// One control command as the device received it (§5.1.6.5).
public struct ControlCommand: Sendable, Equatable {
  public var cls: UInt8
  public var command: UInt8
  public var data: [UInt8]
  public init(cls: UInt8, command: UInt8, data: [UInt8]) {
    self.cls = cls
    self.command = command
    self.data = data
  }
}

/// The device side of the control virtqueue, as a `SimDevice` behaviour: reads
/// `virtio_net_ctrl_hdr` + data, records the command, writes the ack
/// (VIRTIO_NET_OK, or ERR for classes listed in `rejected`).
public final class ControlResponder: Sendable {
  public let queue: Int
  private let state = Mutex<(commands: [ControlCommand], rejected: Set<UInt8>)>(([], []))

  public init(queue: Int) { self.queue = queue }

  public var commands: [ControlCommand] { state.withLock { $0.commands } }
  /// Answer commands of class `cls` with VIRTIO_NET_ERR.
  public func reject(class cls: UInt8) { state.withLock { _ = $0.rejected.insert(cls) } }

  /// The behaviour for `SimDevice` (other queues: echo).
  public var behaviour: SimDevice.Behaviour {
    .custom { [self] q, chain, segments in
      guard q == self.queue else { return 0 }
      var readable: [UInt8] = []
      var ack: DeviceSegment? = nil
      for s in segments {
        if s.isWritable {
          if ack == nil { ack = s }
        } else {
          readable += UnsafeRawBufferPointer(start: s.pointer, count: Int(s.length))
        }
      }
      guard readable.count >= 2, let ack else { return 0 }
      let cmd = ControlCommand(cls: readable[0], command: readable[1], data: Array(readable[2...]))
      let reject = self.state.withLock { st -> Bool in
        st.commands.append(cmd)
        return st.rejected.contains(cmd.cls)
      }
      ack.pointer.storeBytes(of: reject ? NetCtrl.ackErr : NetCtrl.ackOK, as: UInt8.self)
      return 1
    }
  }
}
