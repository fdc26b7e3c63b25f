import CheckReport
import Glibc
import VirtioCore
import VirtioSpec
import VirtioVFIO

/// virtio-net (§5.1): read MAC / link / queue pairs, send one broadcast frame on
/// transmitq0 and ask the host to find its marker.
struct NetProfile: DeviceProfile {
  let kind = "net"
  /// Unique text carried in the frame; the host looks for it (HOSTCHECK net-rx).
  let marker: String

  var plan: VirtioOpenPlan {
    // §5.1.2: receiveq1, transmitq1, …, receiveqN, transmitqN, then controlq with CTRL_VQ.
    .modern(
      wanting: [
        NetFeature.mac, NetFeature.status, NetFeature.mtu, NetFeature.ctrlVQ, NetFeature.mq,
        VirtioFeature.eventIdx, VirtioFeature.indirectDesc, VirtioFeature.ringPacked,
      ]
    ) { f, t in
      let pairs = f.contains(bit: NetFeature.mq) ? max(1, Int(t.readConfig16(VirtioNetConfig.Offset.max_virtqueue_pairs))) : 1
      return 2 * pairs + (f.contains(bit: NetFeature.ctrlVQ) ? 1 : 0)
    }
  }

  func describeConfig(_ t: borrowing VirtioVFIO.VFIOPCITransport, features f: FeatureSet) -> (ok: Bool, text: String) {
    let read = try? t.readConsistentConfig { t in
      (
        mac: (0..<6).map { t.readConfig8(VirtioNetConfig.Offset.mac + $0) },
        status: t.readConfig16(VirtioNetConfig.Offset.status),
        pairs: t.readConfig16(VirtioNetConfig.Offset.max_virtqueue_pairs),
        mtu: t.readConfig16(VirtioNetConfig.Offset.mtu)
      )
    }
    guard let c = read else { return (false, "config_generation never settled") }
    let mac = c.mac.map { hex2($0) }.joined(separator: ":")
    let link = f.contains(bit: NetFeature.status) ? (c.status & NetStatus.linkUp != 0 ? "up" : "down") : "unknown (no STATUS)"
    // §5.1.4: max_virtqueue_pairs exists only with MQ (or RSS).
    let pairs = f.contains(bit: NetFeature.mq) ? "\(c.pairs)" : "n/a (MQ not negotiated, 1 pair; field reads \(c.pairs))"
    let mtu = f.contains(bit: NetFeature.mtu) ? ", mtu \(c.mtu)" : ""
    let ok = f.contains(bit: NetFeature.mac) ? c.mac != [0, 0, 0, 0, 0, 0] : true
    return (ok, "mac \(mac), link \(link), max_virtqueue_pairs \(pairs)\(mtu)")
  }

  func exercise<Q: ConstructibleVirtqueue & ~Copyable>(_ s: inout VirtioPCISession<Q>, report: Report, timeoutMilliseconds: Int) {
    let txQueue = 1  // transmitq1 (§5.1.2)
    guard let buffer = requestBuffer(&s, byteCount: 2048, alignment: 64, check: "net-tx", report: report) else { return }
    // virtio_net_hdr_v1 (§5.1.6): 12 bytes, all zero — no checksum offload, GSO_NONE.
    let hdrLen = 12
    var frame: [UInt8] = Array(repeating: 0xFF, count: 6)  // broadcast destination
    frame += (0..<6).map { s.transport.readConfig8(VirtioNetConfig.Offset.mac + $0) }  // source: the device's MAC
    frame += [0x88, 0xB5]  // EtherType: IEEE 802 local experimental
    frame += Array(marker.utf8)
    while frame.count < 60 { frame.append(0) }
    // SAFETY: `buffer` holds 2048 bytes; header + frame (< 200 bytes) fit.
    buffer.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: hdrLen)
    frame.withUnsafeBytes { buffer.pointer.advanced(by: hdrLen).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
    let length = UInt32(hdrLen + frame.count)

    let rt = roundTrip(
      &s, queue: txQueue, chain: [.readable(buffer.iova, length)], token: 0x7E57, timeoutMilliseconds: timeoutMilliseconds)
    if let e = rt.error {
      report.fail("net-tx", e)
    } else {
      report.pass("net-tx", "\(frame.count)-byte broadcast frame (+\(hdrLen)-byte header) sent on queue \(txQueue), device used it in \(rt.milliseconds) ms")
      report.hostcheck("net-rx \(hexString(Array(marker.utf8)))")
    }
    let taken = rt.vector.map { s.transport.interruptsTaken(vector: $0) } ?? 0
    reportInterrupt(report, "net-interrupt", rt, taken: taken)
  }
}

func hex2(_ b: UInt8) -> String {
  let s = String(b, radix: 16)
  return s.count == 1 ? "0" + s : s
}

func hexString(_ bytes: [UInt8]) -> String { bytes.map(hex2).joined() }
