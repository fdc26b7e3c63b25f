import Synchronization
import VirtioCore
import VirtioNet
import VirtioSim
import VirtioSpec

/// The far end of a simulated virtio-net device's wire, as a `SimDevice`
/// behaviour: frames a test sends arrive on a receive queue (each behind a
/// zeroed `virtio_net_hdr_v1`, §5.1.6), frames the driver transmits are
/// recorded per queue pair (header stripped), and the control queue is
/// answered (`ControlResponder`). A receive queue takes buffers only for
/// frames waiting (`SimDevice.allow`), so the driver's buffers stay posted
/// until there is traffic, as on a real device. With `hashReport` the header
/// is virtio_net_hdr_v1_hash (20 bytes) and carries the Toeplitz hash of an
/// IPv4 UDP frame's addresses and ports under `Toeplitz.defaultKey`
/// (§5.1.6.4.3), as a device with HASH_REPORT and that key would.
public final class NetWire: Sendable {
  public let pairs: Int
  public let hashReport: Bool
  var headerSize: Int { hashReport ? VirtioNetHdrHash.size : MemoryLayout<VirtioNetHdr>.size }
  public let control: ControlResponder?
  private let state: Mutex<(waiting: [[[UInt8]]], sent: [[[UInt8]]])>
  private let device = Mutex<SimDevice?>(nil)

  /// `pairs` queue pairs (receiveq 2q, transmitq 2q+1), then the control queue when `controlQueue`.
  public init(pairs: Int, controlQueue: Bool, hashReport: Bool = false) {
    self.pairs = pairs
    self.hashReport = hashReport
    control = controlQueue ? ControlResponder(queue: 2 * pairs) : nil
    state = Mutex((Array(repeating: [], count: pairs), Array(repeating: [], count: pairs)))
  }

  /// Binds the wire to the device playing it: its receive queues take nothing until frames are sent.
  public func attach(_ d: SimDevice) {
    device.withLock { $0 = d }
    for q in 0..<pairs { d.allow(queue: 2 * q, chains: 0) }
  }

  /// Frames for the driver to receive on queue pair `pair`, in order.
  public func send(_ frames: [[UInt8]], pair: Int = 0) {
    let waiting = state.withLock { s -> Int in
      s.waiting[pair] += frames
      return s.waiting[pair].count
    }
    device.withLock { $0?.allow(queue: 2 * pair, chains: waiting) }
  }

  /// What the driver transmitted on queue pair `pair`, in order.
  public func transmitted(pair: Int = 0) -> [[UInt8]] { state.withLock { $0.sent[pair] } }

  public var behaviour: SimDevice.Behaviour {
    let controlBehaviour = control?.behaviour
    return .custom { [self] q, chain, segments in
      if q >= 2 * pairs {
        guard case .custom(let answer)? = controlBehaviour else { return 0 }
        return answer(q, chain, segments)
      }
      return q % 2 == 0 ? receive(pair: q / 2, into: segments) : record(pair: q / 2, segments)
    }
  }

  /// Writes the next waiting frame behind a zeroed header (num_buffers 1) into the writable segments.
  private func receive(pair: Int, into segments: [DeviceSegment]) -> UInt32 {
    guard let frame = state.withLock({ s in s.waiting[pair].isEmpty ? nil : s.waiting[pair].removeFirst() }) else { return 0 }
    var bytes = [UInt8](repeating: 0, count: headerSize)
    bytes[10] = 1  // num_buffers (le16)
    if hashReport, let (value, report) = Self.hash(frame) {
      for i in 0..<4 { bytes[VirtioNetHdrHash.hashValueOffset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
      bytes[VirtioNetHdrHash.hashReportOffset] = UInt8(report)
    }
    bytes += frame
    var written = 0
    for s in segments where s.isWritable && written < bytes.count {
      let n = min(Int(s.length), bytes.count - written)
      // SAFETY: a writable segment the device ring translated for its full length; n <= its length.
      bytes[written..<(written + n)].withUnsafeBytes { s.pointer.copyMemory(from: $0.baseAddress!, byteCount: n) }
      written += n
    }
    return UInt32(written)
  }

  private func record(pair: Int, _ segments: [DeviceSegment]) -> UInt32 {
    var bytes: [UInt8] = []
    for s in segments where !s.isWritable { bytes += UnsafeRawBufferPointer(start: s.pointer, count: Int(s.length)) }
    let frame = Array(bytes.dropFirst(headerSize))
    state.withLock { $0.sent[pair].append(frame) }
    return 0
  }

  /// IPv4 UDP (no options): the UDPv4 hash over source, destination and ports.
  static func hash(_ f: [UInt8]) -> (UInt32, UInt16)? {
    guard f.count >= 42, f[12] == 0x08, f[13] == 0x00, f[14] == 0x45, f[23] == 17 else { return nil }
    let input = Array(f[26..<34]) + Array(f[34..<38])
    return (Toeplitz.hash(key: Toeplitz.defaultKey, input: input), NetHashReport.udpv4)
  }
}
