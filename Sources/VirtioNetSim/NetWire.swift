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
/// until there is traffic, as on a real device.
public final class NetWire: Sendable {
  public let pairs: Int
  public let control: ControlResponder?
  private let state: Mutex<(waiting: [[[UInt8]]], sent: [[[UInt8]]])>
  private let device = Mutex<SimDevice?>(nil)

  /// `pairs` queue pairs (receiveq 2q, transmitq 2q+1), then the control queue when `controlQueue`.
  public init(pairs: Int, controlQueue: Bool) {
    self.pairs = pairs
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
    var bytes = [UInt8](repeating: 0, count: MemoryLayout<VirtioNetHdr>.size)
    bytes[10] = 1  // num_buffers (le16)
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
    let frame = Array(bytes.dropFirst(MemoryLayout<VirtioNetHdr>.size))
    state.withLock { $0.sent[pair].append(frame) }
    return 0
  }
}
