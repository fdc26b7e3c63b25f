import VirtioCore
import VirtioSpec

/// The virtio-net control virtqueue (§5.1.6.5): one command at a time, waited
/// for. Control path only — never used from a burst.
public struct NetControlQueue<Q: Virtqueue & ~Copyable>: ~Copyable {
  public var queue: Q
  @usableFromInline let doorbell: Doorbell
  /// header (2 bytes) at 0, ack at 64, command data at 128 (up to `maxDataBytes`).
  let scratch: DMARegion
  /// The longest command data: an RSS configuration with a 128-entry
  /// table and a 255-byte key, or MAC tables of a few hundred addresses.
  public static var maxDataBytes: Int { 4096 - 128 }
  public let features: FeatureSet

  public init<A: DMAAllocator & ~Copyable>(
    queue: consuming Q, doorbell: Doorbell, features: FeatureSet, memory: inout A
  ) throws(VirtioError) {
    let region = try memory.allocate(byteCount: 4096, alignment: 64)
    self.queue = queue
    self.doorbell = doorbell
    self.scratch = region
    self.features = features
    // Commands are waited for by polling; the device need not interrupt.
    self.queue.disableInterrupts()
  }

  /// Commands the device answered with VIRTIO_NET_OK.
  public private(set) var commandsSent = 0

  /// Sends `class`/`command` with `data` and waits for the device's ack.
  public mutating func send(
    class cls: UInt8, command: UInt8, data: [UInt8], timeout: Duration = .seconds(5)
  ) throws(VirtioError) {
    guard data.count <= Self.maxDataBytes else {
      throw VirtioError(.invalidArgument, "control command data of \(data.count) bytes is too long (at most \(Self.maxDataBytes)); use fewer entries")
    }
    // SAFETY: all offsets below lie inside the 4096-byte scratch region (data: 128 + maxDataBytes).
    scratch.pointer.storeBytes(of: cls, toByteOffset: 0, as: UInt8.self)
    scratch.pointer.storeBytes(of: command, toByteOffset: 1, as: UInt8.self)
    for (i, b) in data.enumerated() { scratch.pointer.storeBytes(of: b, toByteOffset: 128 + i, as: UInt8.self) }
    scratch.pointer.storeBytes(of: UInt8(0xFF), toByteOffset: 64, as: UInt8.self)
    var chain = InlineArray<3, BufferSegment>(repeating: .readable(0, 0))
    chain[0] = .readable(scratch.iova, 2)
    var n = 1
    if !data.isEmpty {
      chain[1] = .readable(scratch.iova + 128, UInt32(data.count))
      n = 2
    }
    chain[n] = .writable(scratch.iova + 64, 1)
    // §5.1.6.5: header and data device-readable, the ack device-writable.
    let added = queue.add(chain.span.extracting(0..<(n + 1)), token: Self.token)
    guard added == .added else {
      throw VirtioError(.queueBroken, "control queue refused the command (\(added)): \(queue.brokenReason?.description ?? "no free descriptors")")
    }
    if queue.publish() { doorbell.ring(queue.notificationValue) }
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
      switch queue.nextUsed() {
      case .used(let used):
        // One command is in flight at a time, so the token can only be ours
        // (the ring core checked the id); the device must have written the ack byte.
        guard used.token == Self.token, used.length >= 1 else {
          queue.markBroken(.usedIDNotInFlight(id: UInt32(truncatingIfNeeded: used.token)))
          throw VirtioError(
            .queueBroken,
            "the device completed control command class \(cls) command \(command) without writing its ack (used length \(used.length)); reset the device")
        }
        let ack = scratch.pointer.load(fromByteOffset: 64, as: UInt8.self)
        guard ack == NetCtrl.ackOK else {
          throw VirtioError(
            .deviceFailed,
            "the device rejected control command class \(cls) command \(command) (ack \(ack), §5.1.6.5); it does not support this setting — run without it")
        }
        commandsSent += 1
        return
      case .broken:
        throw VirtioError(.queueBroken, "control queue broke: \(queue.brokenReason?.description ?? "unknown")")
      case .empty:
        if clock.now >= deadline {
          queue.markBroken(.deviceStalled)
          throw VirtioError(.timeout, "the device did not answer control command class \(cls) command \(command) within \(timeout)")
        }
      }
    }
  }

  /// VIRTIO_NET_CTRL_RX_PROMISC (needs CTRL_RX).
  public mutating func setPromiscuous(_ on: Bool) throws(VirtioError) {
    try requireFeature(NetFeature.ctrlRx, "promiscuous mode")
    try send(class: NetCtrl.classRx, command: NetCtrl.rxPromisc, data: [on ? 1 : 0])
  }

  /// VIRTIO_NET_CTRL_RX_ALLMULTI (needs CTRL_RX).
  /// §5.1.6.5.4: the gratuitous packets for VIRTIO_NET_S_ANNOUNCE were sent;
  /// the device clears the status bit.
  public mutating func acknowledgeAnnounce() throws(VirtioError) {
    try requireFeature(NetFeature.guestAnnounce, "VIRTIO_NET_F_GUEST_ANNOUNCE")
    try send(class: NetCtrl.classAnnounce, command: NetCtrl.announceAck, data: [])
  }

  public mutating func setAllMulticast(_ on: Bool) throws(VirtioError) {
    try requireFeature(NetFeature.ctrlRx, "all-multicast mode")
    try send(class: NetCtrl.classRx, command: NetCtrl.rxAllMulti, data: [on ? 1 : 0])
  }

  /// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (needs MQ): §5.1.6.5.5, the device uses
  /// only the first `pairs` queue pairs after this (1 ... max_virtqueue_pairs).
  public mutating func setQueuePairs(_ pairs: Int, maxPairs: Int) throws(VirtioError) {
    try requireFeature(NetFeature.mq, "multiqueue")
    guard pairs >= 1, pairs <= maxPairs, pairs <= 0x8000 else {
      throw VirtioError(.invalidArgument, "cannot use \(pairs) queue pairs: the device has 1...\(maxPairs) (max_virtqueue_pairs)")
    }
    let v = UInt16(pairs)
    try send(class: NetCtrl.classMQ, command: NetCtrl.mqVQPairsSet, data: [UInt8(v & 0xFF), UInt8(v >> 8)])
  }

  static var token: UInt64 { 0xC7_1C }

  func requireFeature(_ bit: Int, _ what: String) throws(VirtioError) {
    guard features.contains(bit: bit) else {
      throw VirtioError(.missingFeatures, "the device did not negotiate \(FeatureNames.name(of: bit, device: .net)), needed for \(what)")
    }
  }
}
