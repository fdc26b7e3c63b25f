import VirtioCore
import VirtioSpec

/// The device side of a packed virtqueue — virtio 1.2 §2.8.
///
/// Keeps the device's two positions: where the next available descriptor will
/// appear (with the Driver Ring Wrap Counter it expects there) and where the next
/// used descriptor goes (with the Device Ring Wrap Counter, §2.8.1). A descriptor
/// is available when AVAIL equals the expected wrap and USED does not (§2.8.1);
/// flags are read with acquire before the rest of the descriptor. Used
/// descriptors are written id and len first, flags last with release; the first
/// used descriptor of a batch is held back until `publishUsed()` so the driver
/// never sees part of a batch (as DPDK's vhost does with its shadow used ring).
public struct PackedDeviceRing: ~Copyable, DeviceRing {
  public let size: Int
  /// The descriptor ring (`PackedDesc`, §2.8.13) and the two event suppression
  /// areas (`PackedDescEvent`, §2.8.14), addressed through the spec structs.
  let ring: RingMemory
  let driverEvent: RingMemory
  let deviceEvent: RingMemory
  /// EVENT_IDX and INDIRECT_DESC as negotiated.
  let features: RingFeatures
  var chain: ChainScratch
  /// Slots each Buffer ID's chain took, to skip them when it is used (§2.8.7).
  let chainSlots: UnsafeMutablePointer<UInt16>

  /// Next slot the driver will make available, and the wrap counter it will carry.
  public private(set) var nextAvailSlot: UInt16 = 0
  public private(set) var availWrap: Bool = true
  /// Next slot the device writes a used descriptor to; the Device Ring Wrap Counter.
  public private(set) var usedSlot: UInt16 = 0
  public private(set) var usedWrap: Bool = true
  /// Slots written since the last publish (for the driver event check).
  var slotsSincePublish = 0
  /// A used descriptor whose flags wait for `publishUsed()`, or -1.
  var heldSlot = -1
  var heldFlags: UInt16 = 0
  public var driverBug: DriverBug? { chain.driverBug }
  public var maxChainLength: Int { chain.limit }

  public init(
    size: Int, descIOVA: UInt64, driverIOVA: UInt64, deviceIOVA: UInt64, features: RingFeatures,
    memory: SimIOMMU, maxChainLength: Int? = nil
  ) throws(DriverBug) {
    guard let layout = PackedRingLayout(size: size) else { throw .badQueueSize(size) }
    // §2.8.10.1 alignment: descriptor ring 16, event suppression areas 4.
    let eventBytes = MemoryLayout<PackedDescEvent>.size
    let r = try memory.ringArea(.descriptors, descIOVA, bytes: layout.descRingBytes, alignment: PackedRingLayout.descAlignment)
    let dr = try memory.ringArea(.driver, driverIOVA, bytes: eventBytes, alignment: PackedRingLayout.eventAlignment)
    let dv = try memory.ringArea(.device, deviceIOVA, bytes: eventBytes, alignment: PackedRingLayout.eventAlignment)
    let limit = max(1, maxChainLength ?? size)
    self.size = size
    // SAFETY: each area was translated whole above and checked for the spec's alignment.
    self.ring = RingMemory(r)
    self.driverEvent = RingMemory(dr)
    self.deviceEvent = RingMemory(dv)
    self.features = features
    // SAFETY: device-private tables, freed in deinit.
    self.chain = ChainScratch(limit: limit, memory: memory)
    self.chainSlots = .allocate(capacity: size)
    self.chainSlots.initialize(repeating: 1, count: size)
  }

  deinit {
    chainSlots.deallocate()
  }

  @inline(__always) func isAvailable(_ flags: UInt16, wrap: Bool) -> Bool {
    (flags & VirtqDescFlags.avail != 0) == wrap && (flags & VirtqDescFlags.used != 0) != wrap
  }

  @inline(__always) static func advance(_ slot: inout UInt16, _ wrap: inout Bool, by n: Int, size: Int) {
    var s = Int(slot) &+ n
    if s >= size {
      s &-= size
      wrap.toggle()
    }
    slot = UInt16(truncatingIfNeeded: s)
  }

  // MARK: taking chains (§2.8.21 seen from the device)

  public mutating func nextAvail() -> DeviceChain? {
    guard driverBug == nil else { return nil }
    let headOff = Int(nextAvailSlot) &* MemoryLayout<PackedDesc>.stride
    // Acquire: the descriptor (and, for a chain, the ones after it) is read after its flags.
    let headFlags = ring.loadAcquire(\PackedDesc.flags, at: headOff)
    guard isAvailable(headFlags, wrap: availWrap) else { return nil }
    chain.start()
    if headFlags & VirtqDescFlags.indirect != 0 {
      // §2.8.19: one descriptor naming a table; only WRITE matters inside it.
      guard features.indirect else { return fail(.indirectNotNegotiated) }
      guard headFlags & VirtqDescFlags.next == 0 else { return fail(.indirectWithNext) }
      let addr = ring.load(\PackedDesc.addr, at: headOff)
      let len = ring.load(\PackedDesc.len, at: headOff)
      let id = ring.load(\PackedDesc.id, at: headOff)
      let descBytes = UInt32(MemoryLayout<PackedDesc>.stride)
      guard len >= descBytes, len % descBytes == 0 else { return fail(.badIndirectTableLength(len)) }
      let entries = Int(len / descBytes)
      guard entries <= maxChainLength else { return fail(.chainTooLong(limit: maxChainLength)) }
      guard let t = chain.memory.translate(addr, count: Int(len)) else {
        return fail(.unknownAddress(area: .indirectTable, iova: addr, length: UInt64(len)))
      }
      // SAFETY: translated whole (`len` bytes), a multiple of the descriptor size.
      let table = RingMemory(t)
      for i in 0..<entries {
        let off = i &* MemoryLayout<PackedDesc>.stride
        let flags = table.load(\PackedDesc.flags, at: off)
        guard flags & VirtqDescFlags.indirect == 0 else { return fail(.nestedIndirect) }
        if let bug = chain.add(addr: table.load(\PackedDesc.addr, at: off), len: table.load(\PackedDesc.len, at: off), flags: flags) {
          return fail(bug)
        }
      }
      record(id: id, slots: 1)
      Self.advance(&nextAvailSlot, &availWrap, by: 1, size: size)
      return chain.finish(id: id, descriptors: 1, indirect: true)
    }
    // §2.8.6: a chain is consecutive slots with NEXT on all but the last; every
    // descriptor carries the flags of this lap, and the last one the Buffer ID.
    var slot = nextAvailSlot
    var wrap = availWrap
    var flags = headFlags
    var id: UInt16 = 0
    while true {
      let off = Int(slot) &* MemoryLayout<PackedDesc>.stride
      if chain.count > 0 {
        flags = ring.load(\PackedDesc.flags, at: off)
        guard isAvailable(flags, wrap: wrap) else { return fail(.incompleteChain(slot: Int(slot))) }
        guard flags & VirtqDescFlags.indirect == 0 else { return fail(.indirectWithNext) }
      }
      guard chain.count < maxChainLength, chain.count < size else {
        return fail(.chainTooLong(limit: min(maxChainLength, size)))
      }
      if let bug = chain.add(addr: ring.load(\PackedDesc.addr, at: off), len: ring.load(\PackedDesc.len, at: off), flags: flags) {
        return fail(bug)
      }
      Self.advance(&slot, &wrap, by: 1, size: size)
      if flags & VirtqDescFlags.next == 0 {
        id = ring.load(\PackedDesc.id, at: off)
        break
      }
    }
    record(id: id, slots: chain.count)
    nextAvailSlot = slot
    availWrap = wrap
    return chain.finish(id: id, descriptors: chain.count, indirect: false)
  }

  @inline(__always) func record(id: UInt16, slots: Int) {
    if Int(id) < size { chainSlots[Int(id)] = UInt16(truncatingIfNeeded: slots) }
  }

  mutating func fail(_ bug: DriverBug) -> DeviceChain? { chain.fail(bug) }

  public func segment(_ index: Int) -> DeviceSegment { chain.segment(index) }

  // MARK: returning chains (§2.8.7, §2.8.22)

  public mutating func pushUsed(id: UInt32, len: UInt32) {
    let id16 = UInt16(truncatingIfNeeded: id)
    let slots = Int(id16) < size ? Int(chainSlots[Int(id16)]) : 1
    writeUsed(id: id16, len: len, skip: max(slots, 1))
  }

  /// §2.8.20 (IN_ORDER): one used descriptor with the last buffer's ID, written
  /// at the batch's first slot; the device then skips every slot of the batch.
  public mutating func pushUsedBatch(lastID: UInt32, len: UInt32, buffers: Int, descriptors: Int) {
    precondition(descriptors >= 1 && descriptors <= size)
    writeUsed(id: UInt16(truncatingIfNeeded: lastID), len: len, skip: descriptors)
  }

  mutating func writeUsed(id: UInt16, len: UInt32, skip: Int) {
    let off = Int(usedSlot) &* MemoryLayout<PackedDesc>.stride
    // §2.8.1: a used descriptor has AVAIL == USED == the Device Ring Wrap Counter;
    // §2.8.3: WRITE says whether the device wrote anything.
    var flags: UInt16 = usedWrap ? VirtqDescFlags.avail | VirtqDescFlags.used : 0
    if len > 0 { flags |= VirtqDescFlags.write }
    // len and id first (the device leaves addr as the driver wrote it), flags last.
    ring.store(\PackedDesc.len, at: off, len)
    ring.store(\PackedDesc.id, at: off, id)
    if heldSlot < 0 {
      heldSlot = Int(usedSlot)
      heldFlags = flags
    } else {
      // Release: id and len are visible before the flags that hand the slot back.
      ring.storeRelease(\PackedDesc.flags, at: off, flags)
    }
    Self.advance(&usedSlot, &usedWrap, by: skip, size: size)
    slotsSincePublish &+= skip
  }

  public mutating func publishUsed() -> Bool {
    if heldSlot >= 0 {
      // Release: every used descriptor of the batch is visible before the first one's flags.
      ring.storeRelease(\PackedDesc.flags, at: heldSlot &* MemoryLayout<PackedDesc>.stride, heldFlags)
      heldSlot = -1
    }
    let written = slotsSincePublish
    guard written > 0 else { return false }
    slotsSincePublish = 0
    // The flags stores are visible before we read the driver's event suppression.
    ringFenceFull()
    let flags = driverEvent.load(\PackedDescEvent.flags, at: 0)
    if flags == PackedEventFlags.disable { return false }
    if flags == PackedEventFlags.desc && features.eventIdx {
      // §2.8.10: interrupt when the descriptor named by off_wrap is among those just used.
      let offWrap = driverEvent.load(\PackedDescEvent.offWrap, at: 0)
      return PackedDescEvent.needEvent(offWrap: offWrap, wrap: usedWrap, ringSize: size, new: usedSlot, count: written)
    }
    return true
  }

  // MARK: available-buffer notification suppression (§2.8.10)

  public mutating func enableNotifications() -> Bool {
    if features.eventIdx {
      // Notify me when you make the descriptor at my next slot available.
      let offWrap = nextAvailSlot | (availWrap ? 1 << PackedEventFlags.wrapCounterShift : 0)
      deviceEvent.store(\PackedDescEvent.offWrap, at: 0, offWrap)
      deviceEvent.store(\PackedDescEvent.flags, at: 0, PackedEventFlags.desc)
    } else {
      deviceEvent.store(\PackedDescEvent.flags, at: 0, PackedEventFlags.enable)
    }
    // The request is visible before we look for descriptors that raced with it.
    ringFenceFull()
    return isAvailable(ring.loadAcquire(\PackedDesc.flags, at: Int(nextAvailSlot) &* MemoryLayout<PackedDesc>.stride), wrap: availWrap)
  }

  public mutating func disableNotifications() {
    deviceEvent.store(\PackedDescEvent.flags, at: 0, PackedEventFlags.disable)
  }

  /// Raw control for tests: the device event suppression area (off_wrap, flags).
  public func setDeviceEvent(offWrap: UInt16, flags: UInt16) {
    deviceEvent.store(\PackedDescEvent.offWrap, at: 0, offWrap)
    deviceEvent.store(\PackedDescEvent.flags, at: 0, flags)
    ringFenceFull()
  }

  /// What the driver asked for: its event suppression area.
  public var driverEventOffWrap: UInt16 { driverEvent.load(\PackedDescEvent.offWrap, at: 0) }
  public var driverEventFlags: UInt16 { driverEvent.load(\PackedDescEvent.flags, at: 0) }

  /// Chains (in slots) made available and not yet taken: whether one is waiting.
  public var hasPendingAvail: Bool {
    isAvailable(ring.loadAcquire(\PackedDesc.flags, at: Int(nextAvailSlot) &* MemoryLayout<PackedDesc>.stride), wrap: availWrap)
  }

  // MARK: fault injection

  public mutating func injectUsedIndexJump(by delta: UInt16) -> Bool { false }

  public mutating func injectBadWrapState() -> Bool {
    // AVAIL = !wrap, USED = wrap: neither "available" (AVAIL = wrap, USED = !wrap)
    // nor "used" (both = wrap) for the lap the driver polls.
    let off = Int(usedSlot) &* MemoryLayout<PackedDesc>.stride
    let flags: UInt16 = usedWrap ? VirtqDescFlags.used : VirtqDescFlags.avail
    ring.storeRelease(\PackedDesc.flags, at: off, flags)
    return true
  }
}
