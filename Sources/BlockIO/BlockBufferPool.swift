import Glibc
import VirtioCore

/// One data buffer, by value: where it is for the CPU and for the device, and
/// its size. Handed out by a `BlockBufferPool`; give it back with `release`.
@frozen public struct BlockBuffer: BitwiseCopyable, @unchecked Sendable, Equatable {
  public let pointer: UnsafeMutableRawPointer
  /// The address the device uses (an IOVA through the IOMMU on VFIO; unused on the kernel path).
  public let deviceAddress: UInt64
  public let capacity: Int
  @usableFromInline let index: UInt32

  @inlinable init(pointer: UnsafeMutableRawPointer, deviceAddress: UInt64, capacity: Int, index: UInt32) {
    self.pointer = pointer
    self.deviceAddress = deviceAddress
    self.capacity = capacity
    self.index = index
  }

  /// The buffer's bytes.
  @inlinable public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: pointer, count: capacity) }

  /// The part `[offset, offset + count)` as a buffer of its own (same pool slot: release the whole one).
  @inlinable public func slice(offset: Int, count: Int) -> BlockBuffer {
    precondition(offset >= 0 && count >= 0 && offset + count <= capacity, "buffer slice out of range")
    return BlockBuffer(pointer: pointer + offset, deviceAddress: deviceAddress &+ UInt64(offset), capacity: count, index: index)
  }
}

/// Fixed-size data buffers the device can reach: carved from the VFIO DMA
/// arena (IOMMU-mapped), or page-aligned memory for O_DIRECT on the kernel
/// path. Owned by one thread; allocate/release never allocate or lock.
public struct BlockBufferPool: ~Copyable {
  public let bufferSize: Int
  public let count: Int
  @usableFromInline let base: UnsafeMutableRawPointer
  @usableFromInline let baseAddress: UInt64
  @usableFromInline let free: UnsafeMutablePointer<UInt32>
  @usableFromInline var freeTop: Int
  /// Memory this pool mapped itself (kernel path): unmapped in deinit.
  let ownedMapping: (pointer: UnsafeMutableRawPointer, length: Int)?
  /// Keeps the device (and so its DMA arena) alive while buffers exist.
  let owner: AnyObject?

  /// Buffers in `region` (DMA memory someone else owns and keeps mapped while `owner` lives).
  package init(region: DMARegion, bufferSize: Int, count: Int, owner: AnyObject?) {
    self.bufferSize = bufferSize
    self.count = count
    self.base = region.pointer
    self.baseAddress = region.iova
    self.ownedMapping = nil
    self.owner = owner
    // SAFETY: a private stack of `count` indices, freed in deinit.
    free = .allocate(capacity: max(count, 1))
    for i in 0..<count { free[i] = UInt32(count - 1 - i) }
    freeTop = count
  }

  /// Buffers in fresh page-aligned anonymous memory (kernel path, O_DIRECT).
  package init(anonymousBufferSize bufferSize: Int, count: Int) throws(VirtioError) {
    let length = bufferSize * count
    // SAFETY: a private anonymous mapping owned by this pool, unmapped in deinit.
    guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0), p != MAP_FAILED
    else {
      let e = Glibc.errno
      throw VirtioError(.dmaAllocation, "cannot map \(length) bytes for \(count) I/O buffers: \(Sys.errnoText(e))", errno: e)
    }
    self.bufferSize = bufferSize
    self.count = count
    self.base = p
    self.baseAddress = 0
    self.ownedMapping = (p, length)
    self.owner = nil
    free = .allocate(capacity: max(count, 1))
    for i in 0..<count { free[i] = UInt32(count - 1 - i) }
    freeTop = count
  }

  deinit {
    free.deallocate()
    if let m = ownedMapping { munmap(m.pointer, m.length) }
  }

  /// Buffers free now.
  public var available: Int { freeTop }

  /// A free buffer, or nil when all are out.
  @inlinable public mutating func allocate() -> BlockBuffer? {
    guard freeTop > 0 else { return nil }
    freeTop &-= 1
    let i = free[freeTop]
    let off = Int(i) &* bufferSize
    return BlockBuffer(pointer: base + off, deviceAddress: baseAddress &+ UInt64(off), capacity: bufferSize, index: i)
  }

  /// Gives a buffer back. One that is not from this pool (or a double release
  /// beyond the pool's size) is ignored rather than corrupting the free stack.
  @inlinable public mutating func release(_ b: BlockBuffer) {
    guard Int(b.index) < count, freeTop < count else { return }
    free[freeTop] = b.index
    freeTop &+= 1
  }

  /// Buffer `index` (0..<count), whether free or not — for callers that manage slots themselves.
  @inlinable public func buffer(_ index: Int) -> BlockBuffer {
    precondition(index >= 0 && index < count, "buffer index out of range")
    let off = index &* bufferSize
    return BlockBuffer(pointer: base + off, deviceAddress: baseAddress &+ UInt64(off), capacity: bufferSize, index: UInt32(index))
  }
}

extension BlockBufferPool {
  /// Bytes per buffer of a pool of `count` × `bufferSize` (rounded up to
  /// 4 KiB: page-aligned for O_DIRECT and DMA alike), or why not. Every host checks this first.
  static func checkedBufferSize(count: Int, bufferSize: Int) throws(VirtioError) -> Int {
    guard count > 0, bufferSize > 0, count <= 1 << 20 else {
      throw VirtioError(.invalidArgument, "buffer pool of \(count) × \(bufferSize) bytes: both must be positive")
    }
    return (bufferSize + 4095) & ~4095
  }
}
