/// A packet or data buffer handed around by value: which buffer of which pool,
/// where the data starts and how long it is, plus per-packet metadata. No
/// class, no reference count: copying a handle copies 16 bytes.
///
/// A packet larger than one buffer is a chain: this handle is its head (its
/// first segment, with the packet's metadata) and carries `chained`; the
/// pool's link table names each further segment (`BufferPool.next(after:)`),
/// in place, without a copy. Releasing the head releases the whole chain.
@frozen public struct PacketBuffer: BitwiseCopyable, Equatable, Sendable {
  /// Index of the buffer in its pool.
  public var index: UInt32
  /// Offset of the first data byte inside the buffer.
  public var offset: UInt16
  public var length: UInt16
  /// Checksum metadata (virtio-net §5.1.6.2): on TX, the device must fill in
  /// a checksum at `csumStart + csumOffset`; on RX, the device vouched for it.
  /// Keep `chained` (and `segmented`) when changing them: without it a chain's further buffers
  /// are no longer reached (nor released) through this handle.
  public var flags: UInt8
  /// Storage of `gsoType` (set it through `gsoType`, which keeps `segmented` in step).
  @usableFromInline var gsoTypeValue: UInt8
  public var csumStart: UInt16
  public var csumOffset: UInt16
  public var gsoSize: UInt16

  /// TX: the device computes the checksum from `csumStart`, storing at `csumStart + csumOffset`.
  public static let needsChecksum: UInt8 = 1
  /// RX: the checksum was validated (GUEST_CSUM, VIRTIO_NET_HDR_F_DATA_VALID).
  public static let checksumValid: UInt8 = 2
  /// The pool's link table holds this segment's successor (or says it is the
  /// last): set on a chain's head and on each of its further segments.
  public static let chained: UInt8 = 4

  /// Set while `gsoType` is not 0, so that one test of `flags` finds every
  /// packet the transmit fast path must leave to its slow path.
  public static let segmented: UInt8 = 8

  /// Segmentation offload (virtio-net §5.1.6.2 / §5.1.6.4.1): the header's
  /// gso_type (TCPV4, TCPV6, with the ECN bit) — 0 for a frame that goes out
  /// as it is — with `gsoSize`, the payload bytes of each segment. On RX, what
  /// the device handed over (GUEST_TSO4/6); on TX, what a port must do: pass
  /// it to a device with HOST_TSO4/6 (the checksum partial, `needsChecksum`),
  /// or segment in software. Setting it sets or clears `segmented` in `flags`.
  @inlinable public var gsoType: UInt8 {
    get { gsoTypeValue }
    set {
      gsoTypeValue = newValue
      flags = newValue != 0 ? flags | Self.segmented : flags & ~Self.segmented
    }
  }

  /// True for a packet of several buffers (see `BufferPool.next(after:)`).
  @inlinable public var isChained: Bool { flags & Self.chained != 0 }

  /// RX: the device reported this packet's hash (virtio-net HASH_REPORT); it
  /// sits in the headroom until the buffer is transmitted or rewritten.
  public static let hashReported: UInt8 = 0x80

  @inlinable public init(index: UInt32, offset: UInt16, length: UInt16) {
    self.index = index
    self.offset = offset
    self.length = length
    self.flags = 0
    self.gsoTypeValue = 0
    self.csumStart = 0
    self.csumOffset = 0
    self.gsoSize = 0
  }
}

/// Fixed-size buffers carved from one DMA region, with a LIFO free stack
/// (the most recently freed buffer is the one still in cache). Owned by one
/// thread; every queue that thread drives takes from and returns to it, so a
/// buffer received on one port can be transmitted on another as is.
///
/// Buffers lie an odd number of cache lines apart by default (2048-byte
/// buffers 2112 bytes apart): at a power-of-two stride the first lines of
/// every buffer — header and frame start, the lines both the driver and the
/// device touch per packet — fall into the same few cache sets, and a burst
/// of them evicts itself, on our side and in the device's (a vhost-user
/// backend's) core. An odd stride spreads them over every set.
public struct BufferPool: ~Copyable {
  public let region: DMARegion
  /// Usable bytes per buffer (the size asked for, rounded up to 64).
  public let bufferSize: Int
  /// Bytes from one buffer's start to the next: `bufferSize`, plus one cache
  /// line where that is an even number of lines (unless given).
  public let stride: Int
  public let count: Int
  /// Bytes kept free in front of the data, room for a device header (e.g. virtio_net_hdr).
  public let headroom: Int
  @usableFromInline let free: UnsafeMutablePointer<UInt32>
  @usableFromInline var freeTop: Int
  /// Chains: `links[i]` is the segment after buffer `i` (`endOfChain` when none).
  @usableFromInline let links: UnsafeMutablePointer<PacketBuffer>
  @usableFromInline static var endOfChain: UInt32 { UInt32.max }

  /// `count` buffers of `bufferSize` bytes (rounded up to 64), from `memory`,
  /// `stride` bytes apart (a multiple of 64, at least the rounded size; nil:
  /// an odd number of cache lines, see above).
  public init<A: DMAAllocator & ~Copyable>(
    count: Int, bufferSize: Int, headroom: Int = 64, stride: Int? = nil, memory: inout A
  ) throws(VirtioError) {
    guard count > 0, count <= Int(Self.chainMark), bufferSize > headroom, bufferSize <= Int(UInt16.max) + 1 else {
      throw VirtioError(.invalidArgument, "buffer pool: \(count) buffers of \(bufferSize) bytes (headroom \(headroom)) is not a usable shape")
    }
    let size = Self.roundedSize(bufferSize)
    let step = stride ?? Self.oddLineStride(size)
    let total = step.multipliedReportingOverflow(by: count)
    guard step >= size, step & 63 == 0, !total.overflow else {
      throw VirtioError(.invalidArgument, "buffer pool: a stride of \(step) bytes for \(count) buffers of \(size) bytes; use a multiple of 64 of at least \(size), or leave it unset")
    }
    let region = try memory.allocate(byteCount: total.partialValue, alignment: 4096)
    self.region = region
    self.bufferSize = size
    self.stride = step
    self.count = count
    self.headroom = headroom
    // SAFETY: a driver-private stack of `count` indices, freed in deinit.
    free = .allocate(capacity: count)
    for i in 0..<count { free[i] = UInt32(count - 1 - i) }
    freeTop = count
    // SAFETY: a driver-private table of `count` handles, freed in deinit; read only through chained handles.
    links = .allocate(capacity: count)
    links.initialize(repeating: PacketBuffer(index: Self.endOfChain, offset: 0, length: 0), count: count)
  }

  deinit {
    free.deallocate()
    links.deallocate()
  }

  public var available: Int { freeTop }

  /// The usable size a pool makes of `bufferSize`: rounded up to a whole cache line.
  public static func roundedSize(_ bufferSize: Int) -> Int { (bufferSize + 63) & ~63 }

  /// `size` (a multiple of 64) if that is an odd number of cache lines, else one line more.
  public static func oddLineStride(_ size: Int) -> Int {
    (size >> 6) & 1 == 1 ? size : size + 64
  }

  /// A fresh buffer with its data starting after the headroom, or nil when empty.
  @inlinable public mutating func allocate() -> PacketBuffer? {
    guard freeTop > 0 else { return nil }
    freeTop &-= 1
    return PacketBuffer(index: free[freeTop], offset: UInt16(truncatingIfNeeded: headroom), length: 0)
  }

  /// Takes up to `n` buffers off the free stack as one block and returns how
  /// many: `blockBuffer(i)` names the `i`-th, in the order they were released
  /// (the stack's top `n`, bottom first, where `allocate` pops top first).
  /// A receive refill takes its buffers so: a consumer that releases a burst
  /// in order gives each ring slot back the buffer it held, and the ring's
  /// descriptors need no rewrite (`SplitVirtqueue`). `endBlock` puts back what
  /// the caller did not use; nothing else may allocate or release in between.
  @inlinable package mutating func takeBlock(upTo n: Int) -> Int {
    let taken = min(max(n, 0), freeTop)
    freeTop &-= taken
    return taken
  }

  /// Buffer `i` of the block `takeBlock` just took (`i` below what it returned).
  @inlinable package func blockBuffer(_ i: Int) -> PacketBuffer {
    // SAFETY: i < taken, so freeTop + i lies in the block just above the stack, inside `free`.
    PacketBuffer(index: free[freeTop &+ i], offset: UInt16(truncatingIfNeeded: headroom), length: 0)
  }

  /// Ends a block of `taken` buffers of which the first `used` were kept:
  /// the rest go back on the stack, in their order.
  @inlinable package mutating func endBlock(used: Int, taken: Int) {
    guard used < taken else { return }
    var i = 0
    while used &+ i < taken {
      free[freeTop &+ i] = free[freeTop &+ used &+ i]
      i &+= 1
    }
    freeTop &+= i
  }

  /// Returns a buffer — with a chained handle, it and every segment after it.
  /// A handle whose index is not from this pool is ignored rather than
  /// corrupting the stack.
  @inlinable public mutating func release(_ buffer: PacketBuffer) {
    guard Int(buffer.index) < count, freeTop < count else { return }
    free[freeTop] = buffer.index
    freeTop &+= 1
    if _slowPath(buffer.flags & PacketBuffer.chained != 0) { releaseSegments(after: buffer) }
  }

  /// Set in a buffer index that stands for a whole chain (a transmit
  /// token's index, `release(index:)`). No pool has 2^31 buffers, so the
  /// range check every release makes finds the mark too: a one-buffer
  /// release pays no test for chains.
  public static var chainMark: UInt32 { 1 << 31 }

  /// Returns buffer `index` — or, with `chainMark`, the chain it heads, all
  /// its segments. An index not from this pool is ignored, as `release` does.
  @inlinable public mutating func release(index: UInt32) {
    guard _fastPath(Int(index) < count && freeTop < count) else {
      releaseMarked(index)
      return
    }
    free[freeTop] = index
    freeTop &+= 1
  }

  /// `release(index:)`'s other case, out of line: a marked chain head, or nothing.
  @usableFromInline mutating func releaseMarked(_ index: UInt32) {
    guard index & Self.chainMark != 0 else { return }
    var head = PacketBuffer(index: index & ~Self.chainMark, offset: 0, length: 0)
    head.flags = PacketBuffer.chained
    release(head)
  }

  /// The rest of a chain; at most `count` steps, so even a corrupted table
  /// (a cycle) cannot keep this looping.
  @usableFromInline mutating func releaseSegments(after head: PacketBuffer) {
    var cur = head
    for _ in 0..<count {
      guard let next = self.next(after: cur), freeTop < count else { return }
      free[freeTop] = next.index
      freeTop &+= 1
      cur = next
    }
  }

  // MARK: chains

  /// The segment after `segment` in its packet, or nil when it is the last
  /// (or the packet is one buffer).
  @inlinable public func next(after segment: PacketBuffer) -> PacketBuffer? {
    guard segment.flags & PacketBuffer.chained != 0, Int(segment.index) < count else { return nil }
    let n = links[Int(segment.index)]
    return n.index == Self.endOfChain ? nil : n
  }

  /// Appends `segment` after `tail`, the last segment of the packet whose
  /// head is `head` (`tail` may be `head`). `head` gains `chained`; `tail`
  /// becomes `segment`. Zero copy: only the link table changes.
  @inlinable public mutating func append(_ segment: PacketBuffer, head: inout PacketBuffer, tail: inout PacketBuffer) {
    guard Int(segment.index) < count, Int(tail.index) < count else { return }
    var s = segment
    s.flags |= PacketBuffer.chained
    links[Int(s.index)] = PacketBuffer(index: Self.endOfChain, offset: 0, length: 0)
    if tail.index == head.index { head.flags |= PacketBuffer.chained }
    links[Int(tail.index)] = s
    tail = s
  }

  /// Buffers in the packet and their data bytes (the head's and every
  /// further segment's), walking at most `count` links.
  @inlinable public func packetSize(_ head: PacketBuffer) -> (segments: Int, bytes: Int) {
    var segments = 1
    var bytes = Int(head.length)
    var cur = head
    while segments <= count, let n = next(after: cur) {
      segments &+= 1
      bytes &+= Int(n.length)
      cur = n
    }
    return (segments, bytes)
  }

  /// Where buffer `index` starts, for the driver and for the device.
  @inlinable public func pointer(_ b: PacketBuffer) -> UnsafeMutableRawPointer {
    region.pointer + Int(b.index) &* stride
  }
  @inlinable public func iova(_ b: PacketBuffer) -> UInt64 {
    region.iova &+ UInt64(b.index) &* UInt64(stride)
  }

  /// The packet's bytes, for reading or writing in place.
  @inlinable public func data(_ b: PacketBuffer) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(start: pointer(b) + Int(b.offset), count: Int(b.length))
  }
}
