internal import CPacketSys
import VirtioOS
import VirtioCore
import VirtioNet

/// The backend of one queue, in a heap cell reached in place: the burst
/// functions switch over these cases once per burst — the ring layout of a
/// virtio-net queue pair (whatever its transport), or an AF_PACKET socket.
///
/// SAFETY (every `p.pointee` in this file): the cell was made by `box` when
/// the queue was taken, is owned by exactly one `PortQueue` (noncopyable, so
/// one owner and one thread at a time), and is freed only by that queue's
/// deinit — so the pointer is valid and unaliased whenever a method runs.
enum QueueBackend {
  case split(UnsafeMutablePointer<VirtioPortQueue<SplitVirtqueue>>)
  case packed(UnsafeMutablePointer<VirtioPortQueue<PackedVirtqueue>>)
  case kernel(UnsafeMutablePointer<PacketSocketQueue>)
}

/// One queue pair of a port (a virtio-net RX/TX queue pair over VFIO,
/// vhost-user or a simulated device, or one AF_PACKET socket), owned by one worker thread. Same type
/// for every path.
///
/// Burst API: `receive(into:pool:)` fills a span with packet handles and
/// returns how many; `transmit(_:pool:)` queues a prefix of a span and
/// returns how many it took (the rest stay the caller's: retry or release
/// them, and count them in `stats.txDropped`). No allocation, reference
/// counting, existential or throw on either.
public struct PortQueue: ~Copyable {
  let backend: QueueBackend
  public let port: Int
  public let queue: Int
  let slot: StatsSlot
  /// What a sleeping worker polls: the RX vector's eventfd (VFIO), the RX call eventfd (vhost-user), the socket (kernel); -1: none.
  public let wakeFD: Int32
  let wakeIsEventFD: Bool

  deinit {
    switch backend {
    case .split(let p): unbox(p)
    case .packed(let p): unbox(p)
    case .kernel(let p): unbox(p)
    }
  }

  /// Fills the ring from `pool` before the first receive (VFIO: §5.1.6.3.1).
  public mutating func start(pool: inout BufferPool) {
    switch backend {
    case .split(let p): p.pointee.pair.refill(&pool)
    case .packed(let p): p.pointee.pair.refill(&pool)
    case .kernel: break
    }
  }

  /// Up to `burst.count` received packets, in arrival order; returns how many.
  public mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool) -> Int {
    switch backend {
    case .split(let p): p.pointee.receive(into: &burst, pool: &pool)
    case .packed(let p): p.pointee.receive(into: &burst, pool: &pool)
    case .kernel(let p): p.pointee.receive(into: &burst, pool: &pool)
    }
  }

  /// Queues a prefix of `burst` in order; returns its length.
  public mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool) -> Int {
    switch backend {
    case .split(let p): p.pointee.transmit(burst, pool: &pool)
    case .packed(let p): p.pointee.transmit(burst, pool: &pool)
    case .kernel(let p): p.pointee.transmit(burst, pool: &pool)
    }
  }

  /// Counts `n` packets the caller dropped after `transmit` refused them.
  public mutating func countDropped(_ n: Int) {
    switch backend {
    case .split(let p): p.pointee.pair.stats.txDropped &+= UInt64(n)
    case .packed(let p): p.pointee.pair.stats.txDropped &+= UInt64(n)
    case .kernel(let p): p.pointee.stats.txDropped &+= UInt64(n)
    }
  }

  /// Returns finished TX buffers to the pool and rings a doorbell a TX kick
  /// batch held back (virtio, `NetQueuePolicy.txKickBatch`) / re-kicks a TX
  /// ring the kernel could not empty (kernel). For idle loops.
  public mutating func flush(pool: inout BufferPool) {
    switch backend {
    case .split(let p): p.pointee.flush(pool: &pool)
    case .packed(let p): p.pointee.flush(pool: &pool)
    case .kernel(let p): if p.pointee.kickPending { p.pointee.kick() }
    }
  }

  /// When the worker stops, before its last `publishStats`: the kernel path
  /// kicks until the kernel took every TX frame handed to it (bounded) and
  /// counts what it did not take, and RX frames left in its ring, as dropped
  /// (issue 13: every frame delivered or counted). Nothing on the other paths.
  public mutating func finish() {
    if case .kernel(let p) = backend { p.pointee.finish() }
  }

  public var stats: NetQueueStats {
    switch backend {
    case .split(let p): p.pointee.pair.stats
    case .packed(let p): p.pointee.pair.stats
    case .kernel(let p): p.pointee.stats
    }
  }

  /// Copies the counters where the main thread reads them (`PortGroup.stats`).
  /// Cheap (a dozen plain stores): call it once per loop of the worker.
  public func publishStats() { slot.publish(stats) }

  /// Why the queue stopped (the device wrote something it never could have), if it did.
  public var brokenReason: BrokenReason? {
    switch backend {
    case .split(let p): p.pointee.pair.brokenReason
    case .packed(let p): p.pointee.pair.brokenReason
    case .kernel: nil
    }
  }

  // MARK: hybrid mode (QueueWaiter)

  /// Asks for a wake-up at the next received packet; true when packets are
  /// already waiting (receive instead of sleeping).
  mutating func arm() -> Bool {
    switch backend {
    case .split(let p): p.pointee.pair.armReceiveInterrupt()
    case .packed(let p): p.pointee.pair.armReceiveInterrupt()
    case .kernel(let p): p.pointee.pending()
    }
  }

  mutating func disarm() {
    switch backend {
    case .split(let p): p.pointee.pair.disarmReceiveInterrupt()
    case .packed(let p): p.pointee.pair.disarmReceiveInterrupt()
    case .kernel: break
    }
  }

  /// After the wake fd fired: consume the eventfd count, count the interrupts.
  mutating func acknowledgeWakeup() {
    let n: UInt64 = wakeIsEventFD ? EventFD.drain(wakeFD) : 1
    guard n > 0 else { return }
    switch backend {
    case .split(let p): p.pointee.pair.stats.interrupts &+= n
    case .packed(let p): p.pointee.pair.stats.interrupts &+= n
    case .kernel(let p): p.pointee.stats.interrupts &+= n
    }
  }

  /// Kernel path: frames the kernel dropped on a full RX ring (control path).
  func kernelDrops() -> UInt64 {
    if case .kernel(let p) = backend { return p.pointee.kernelDrops() }
    return 0
  }
}
