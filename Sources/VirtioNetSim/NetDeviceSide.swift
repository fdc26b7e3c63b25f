import VirtioCore
import VirtioNet
import VirtioSim
import VirtioSpec

/// The device side of one virtio-net queue pair (§5.1.6), driven step by step
/// by a test: no thread, so every outcome is exact. Built over VirtioSim's
/// device rings (split or packed), which translate and bounds-check every
/// address the driver gave.
///
/// ```
/// var dev = try NetDeviceSide<SplitDeviceRing>(rx: pair.rx, tx: pair.tx, features: f, memory: dma.iommu)
/// dev.deliver(frame)            // into the next RX buffer, header first
/// dev.publishRX()               // the driver sees it
/// dev.collectTX { hdr, bytes in ... }
/// ```
public struct NetDeviceSide<R: DeviceRing & ~Copyable>: ~Copyable {
  public var rx: R
  public var tx: R
  /// Frames delivered, and RX interrupts the driver asked for.
  public private(set) var delivered = 0
  public private(set) var rxInterrupts = 0
  public private(set) var txInterrupts = 0

  public init<RXQ: Virtqueue & ~Copyable, TXQ: Virtqueue & ~Copyable>(
    rx rq: borrowing RXQ, tx tq: borrowing TXQ, features: RingFeatures, memory: SimIOMMU
  ) throws(DriverBug) {
    let r = try R(
      size: rq.size, descIOVA: rq.descAreaIOVA, driverIOVA: rq.driverAreaIOVA, deviceIOVA: rq.deviceAreaIOVA,
      features: features, memory: memory, maxChainLength: nil)
    let t = try R(
      size: tq.size, descIOVA: tq.descAreaIOVA, driverIOVA: tq.driverAreaIOVA, deviceIOVA: tq.deviceAreaIOVA,
      features: features, memory: memory, maxChainLength: nil)
    rx = r
    tx = t
  }

  /// Writes `header` and `frame` into the next available RX buffer and
  /// returns it used with length 12 + frame (or `usedLength` when given:
  /// a lying device). False when the driver has posted no buffer, or the
  /// buffer is too small.
  @discardableResult
  public mutating func deliver(
    _ frame: [UInt8], header: VirtioNetHdr = VirtioNetHdr(num_buffers: 1), usedLength: UInt32? = nil
  ) -> Bool {
    guard let chain = rx.nextAvail() else { return false }
    var bytes = withUnsafeBytes(of: header) { Array($0) }
    bytes += frame
    guard chain.writableBytes >= UInt32(bytes.count) else {
      rx.pushUsed(chain, len: 0)
      return false
    }
    var at = 0
    for i in 0..<chain.segmentCount where at < bytes.count {
      let s = rx.segment(i)
      guard s.isWritable else { continue }
      let n = min(Int(s.length), bytes.count - at)
      bytes.withUnsafeBytes { s.pointer.copyMemory(from: $0.baseAddress! + at, byteCount: n) }
      at += n
    }
    rx.pushUsed(chain, len: usedLength ?? UInt32(bytes.count))
    delivered += 1
    return true
  }

  /// MRG_RXBUF (§5.1.6.4): writes `header` and `frame` across as many
  /// available RX buffers as it takes, the header only at the start of the
  /// first, whose num_buffers says how many (`numBuffers` overrides it: a
  /// lying device). Returns the buffers used, or 0 when the driver posted too
  /// few (those taken are returned empty).
  @discardableResult
  public mutating func deliverMerged(
    _ frame: [UInt8], header: VirtioNetHdr = VirtioNetHdr(), numBuffers: UInt16? = nil
  ) -> Int {
    let headerBytes = MemoryLayout<VirtioNetHdr>.size
    var chains: [DeviceChain] = []
    var lengths: [UInt32] = []
    var headerAt: UnsafeMutableRawPointer? = nil
    let bytes = [UInt8](repeating: 0, count: headerBytes) + frame
    var at = 0
    while at < bytes.count {
      guard let chain = rx.nextAvail() else {
        for c in chains { rx.pushUsed(c, len: 0) }
        return 0
      }
      var used: UInt32 = 0
      for i in 0..<chain.segmentCount where at < bytes.count {
        let s = rx.segment(i)
        guard s.isWritable else { continue }
        if headerAt == nil {
          guard Int(s.length) >= headerBytes else {
            rx.pushUsed(chain, len: 0)
            return 0
          }
          headerAt = s.pointer
        }
        let n = min(Int(s.length), bytes.count - at)
        bytes.withUnsafeBytes { s.pointer.copyMemory(from: $0.baseAddress! + at, byteCount: n) }
        at += n
        used += UInt32(n)
      }
      chains.append(chain)
      lengths.append(used)
    }
    // The header last, once num_buffers is known.
    var h = header
    h.num_buffers = numBuffers ?? UInt16(chains.count)
    withUnsafeBytes(of: h) { headerAt!.copyMemory(from: $0.baseAddress!, byteCount: headerBytes) }
    for (i, c) in chains.enumerated() { rx.pushUsed(c, len: lengths[i]) }
    delivered += 1
    return chains.count
  }

  /// Makes delivered frames visible; true when the driver wanted an interrupt.
  @discardableResult
  public mutating func publishRX() -> Bool {
    let wanted = rx.publishUsed()
    if wanted { rxInterrupts += 1 }
    return wanted
  }

  /// RX buffers the driver has made available and the device has not taken.
  public mutating func takeRXBuffer() -> DeviceChain? { rx.nextAvail() }

  /// Takes every available TX chain, hands `body` its virtio-net header and
  /// frame (the readable bytes after the header), returns it used (length 0:
  /// nothing written) and publishes. Returns how many.
  @discardableResult
  public mutating func collectTX(_ body: (VirtioNetHdr, [UInt8]) -> Void = { _, _ in }) -> Int {
    var n = 0
    while let chain = tx.nextAvail() {
      var bytes: [UInt8] = []
      for i in 0..<chain.segmentCount {
        let s = tx.segment(i)
        if !s.isWritable { bytes += UnsafeRawBufferPointer(start: s.pointer, count: Int(s.length)) }
      }
      if bytes.count >= 12 {
        let hdr = bytes.withUnsafeBytes { $0.loadUnaligned(as: VirtioNetHdr.self) }
        body(hdr, Array(bytes[12...]))
      }
      tx.pushUsed(chain, len: 0)
      n += 1
    }
    if n > 0 && tx.publishUsed() { txInterrupts += 1 }
    return n
  }

  /// The driver asked not to be notified, as seen by the device (no kick needed).
  public var driverBug: DriverBug? { rx.driverBug ?? tx.driverBug }
}
