import BenchSupport
import CAllocCounter
import CNetDevice
import Glibc
import VirtioCore
import VirtioNet
import VirtioOS
import VirtioSpec

/// One run's counts (items = packets) and how often the TX ring was full.
struct Result {
  var counts = RunCounts()
  var txRingFull: UInt64 = 0
  /// `--gso software`: frames the driver cut the packets into.
  var txSegments: UInt64 = 0
  /// `--allocate-per-burst`: keeps its allocations from being optimised away.
  var sink = 0
}

/// One measured run: a NetQueuePair forwarding everything it receives back out
/// (receive burst -> transmit the same buffers, zero copy), against the C
/// device filling RX buffers with `frame` and consuming TX chains — on its own
/// CPU (`threaded`) or alternating with the driver on this thread.
/// `gso`: the frames are TCP/IPv4 GSO packets (`TCPFrame`), cut at `mss`.
@inline(never)
func forward<Q: ConstructibleVirtqueue & ~Copyable>(
  _: Q.Type, packed: Bool, ringSize: Int, burst: Int, packets: UInt64, frame: [UInt8], threaded: Bool, chains: Bool = false,
  gso: GSOMode? = nil, mss: Int = 1460, allocatePerBurst: Bool = false
) -> Result {
  var dma = BenchDMA()
  var f = FeatureSet(bits: [VirtioFeature.version1, VirtioFeature.eventIdx])
  if packed { f.formUnion(FeatureSet(bit: VirtioFeature.ringPacked)) }
  // Chains: frames larger than a 2 KiB buffer arrive with MRG_RXBUF and leave as indirect chains.
  if chains || gso != nil { f.formUnion(FeatureSet(bits: [NetFeature.mrgRxbuf, VirtioFeature.indirectDesc])) }
  // GSO: checksum and TCP segmentation offload both ways, as vio-fwd asks for them
  // (NetFeaturePolicy.segmentation) — or, for `software`, from a device without HOST_TSO4/6.
  if let gso {
    f.formUnion(FeatureSet(bits: [NetFeature.csum, NetFeature.guestCsum]))
    let host = [NetFeature.hostTSO4, NetFeature.hostTSO6, NetFeature.hostECN]
    f.formUnion(FeatureSet(bits: NetFeaturePolicy.segmentation.filter { gso == .device || !host.contains($0) }))
  }
  let ring = RingFeatures(negotiated: f)
  let rx = try! Q(index: 0, size: ringSize, features: ring, memory: &dma, maxIndirect: 0)
  let tx = try! Q(index: 1, size: ringSize, features: ring, memory: &dma, maxIndirect: chains || gso != nil ? 8 : 0)
  func p(_ iova: UInt64) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(iova)) }
  let device = frame.withUnsafeBufferPointer { fr in
    cnet_dev_new(
      packed ? 1 : 0, p(rx.descAreaIOVA), p(rx.driverAreaIOVA), p(rx.deviceAreaIOVA), UInt16(ringSize), p(tx.descAreaIOVA),
      p(tx.driverAreaIOVA), p(tx.deviceAreaIOVA), UInt16(ringSize), fr.baseAddress, UInt32(fr.count))!
  }
  defer { cnet_dev_free(device) }
  if chains || gso != nil { cnet_dev_set_mergeable(device) }
  if gso != nil {
    cnet_dev_set_gso(
      device, VirtioNetHdr.gsoTCPv4, UInt16(TCPFrame.headerLength), UInt16(mss), UInt16(TCPFrame.tcpOffset),
      UInt16(TCPFrame.checksumOffset))
  }
  // The frame template must outlive the device thread: keep a copy here.
  var pair = NetQueuePair(rx: rx, tx: tx, rxDoorbell: .none, txDoorbell: .none, features: f)
  // Chains hold several buffers each: room for every ring full and the bursts in hand.
  let perPacket = chains || gso != nil ? (frame.count + 12 + 1995) / 1996 : 1
  var pool = try! BufferPool(count: 4 * ringSize + 2 * burst * perPacket, bufferSize: 2048, headroom: 64, memory: &dma)
  let slots = UnsafeMutableBufferPointer<PacketBuffer>.allocate(capacity: burst)
  defer { slots.deallocate() }
  slots.initialize(repeating: PacketBuffer(index: 0, offset: 0, length: 0))
  pair.refill(&pool)

  var r = Result()
  var handle: UnsafeMutableRawPointer? = nil
  if threaded {
    cnet_pin_self(0)
    handle = cnet_dev_start(device, 1)
  }
  let a0 = alloc_counter_total()
  let t0 = monotonicNanoseconds()
  while r.counts.items < packets {
    if !threaded { _ = cnet_dev_process(device) }
    var span = slots.mutableSpan
    let n = pair.receive(into: &span, pool: &pool)
    if n == 0 {
      if pair.brokenReason != nil || cnet_dev_broken(device) != 0 {
        r.counts.broken = true
        break
      }
      pair.reclaim(&pool)
      continue
    }
    var sent = 0
    while sent < n {
      let k = pair.transmit(UnsafeBufferPointer(slots).span.extracting(sent..<n), pool: &pool)
      sent &+= k
      if k == 0 && !threaded { _ = cnet_dev_process(device) }
    }
    r.counts.items &+= UInt64(n)
    // `--allocate-per-burst`: the allocation check's own check (it must fail the run).
    if _slowPath(allocatePerBurst) { r.sink &+= [Int](repeating: n, count: 8 &+ n).count }
  }
  r.counts.nanoseconds = monotonicNanoseconds() &- t0
  r.counts.allocations = alloc_counter_total() &- a0
  if let handle { cnet_dev_stop(handle) }
  r.counts.notifications = pair.stats.notifications
  if chains && pair.stats.rxChains == 0 { r.counts.broken = true }
  // Each mode did what it says: every packet a GSO packet in, and out whole or cut.
  switch gso {
  case .device?: if pair.stats.rxGSO != r.counts.items || pair.stats.txGSO == 0 { r.counts.broken = true }
  case .software?: if pair.stats.rxGSO != r.counts.items || pair.stats.txSegmented == 0 || pair.stats.txGSO != 0 { r.counts.broken = true }
  case nil: break
  }
  r.txSegments = pair.stats.txSegments
  r.txRingFull = pair.stats.txRingFull
  withExtendedLifetime(frame) {}
  return r
}
