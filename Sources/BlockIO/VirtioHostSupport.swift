import Glibc
import VirtioCore

/// What the two virtio block hosts (over VFIO and over vhost-user) do alike
/// at open; each keeps only what its transport changes.
enum VirtioHostSupport {
  /// GET_ID (§5.2.6) on a fresh queue, polled up to `timeoutMilliseconds`: the
  /// serial as printable text, or nil when the device has none or fails.
  /// `region` (64 bytes of device-reachable memory) receives the reply.
  static func readSerial(_ queue: inout BlockQueue, into region: DMARegion, timeoutMilliseconds: Int) -> String? {
    let b = BlockBuffer(pointer: region.pointer, deviceAddress: region.iova, capacity: 64, index: 0)
    guard queue.submit(BlockRequest(op: .getID, offset: 0, length: 20, buffer: b, tag: 0)) == .queued else { return nil }
    queue.kick()
    let deadline = monotonicNanoseconds() &+ UInt64(timeoutMilliseconds) &* 1_000_000
    while monotonicNanoseconds() < deadline && queue.brokenReason == nil {
      if let c = queue.poll() {
        guard c.status == .ok else { return nil }
        // The device-written bytes are only ever read as text, up to the first NUL.
        let raw = UnsafeRawBufferPointer(start: region.pointer, count: 20)
        let bytes = raw.prefix { $0 != 0 }.map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: "?") }
        return String(decoding: bytes, as: UTF8.self)
      }
      sched_yield()
    }
    return nil
  }
}
