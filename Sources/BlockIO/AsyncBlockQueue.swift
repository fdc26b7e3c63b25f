import Glibc

/// An `async` front end for apps that prefer it to submit/poll: one queue
/// driven by a thread of its own, requests handed over under a lock, bytes
/// copied in and out of the queue's DMA buffers. Convenient, not the fast path
/// (it allocates per request); use `BlockQueue` directly for that.
///
///     let io = try AsyncBlockQueue(device: dev, queue: 0)
///     try await io.write(bytes, at: 4096)
///     let back = try await io.read(at: 4096, length: 4096)
public final class AsyncBlockQueue: @unchecked Sendable {
  struct Pending {
    var op: BlockOperation
    var offset: UInt64
    var length: Int
    var data: [UInt8]
    var done: CheckedContinuation<Result<[UInt8], VirtioError>, Never>
  }

  public let maxIOBytes: Int
  public let info: BlockDeviceInfo
  private let lock = HostLock()
  // SAFETY: a condition variable and its mutex, initialised in init, destroyed
  // and freed in deinit (which runs only after the thread, holding a reference, ended).
  private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
  private let condLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  private var incoming: [Pending] = []
  private var stopping = false
  private var thread: pthread_t? = nil
  /// Owned by the worker thread once started.
  private var queue: BlockQueue?
  private var pool: BlockBufferPool?

  /// Takes queue `index` of `device` and starts its thread. Up to `depth`
  /// requests of at most `maxIOBytes` each are in flight at once.
  public init(device: borrowing BlockDevice, queue index: Int = 0, depth: Int = 32, maxIOBytes: Int = 128 << 10) throws(VirtioError) {
    self.info = device.info
    self.maxIOBytes = maxIOBytes
    var q = try device.makeQueue(index)
    if q.hasInterrupts { q.setWaitMode(.interrupts) }
    self.queue = consume q
    self.pool = try device.makeBufferPool(count: max(1, min(depth, info.queueDepth)), bufferSize: maxIOBytes)
    pthread_cond_init(cond, nil)
    pthread_mutex_init(condLock, nil)
    var tid = pthread_t()
    let ctx = Unmanaged.passRetained(self).toOpaque()
    let rc = pthread_create(&tid, nil, { raw in
      let me = Unmanaged<AsyncBlockQueue>.fromOpaque(raw!).takeRetainedValue()
      me.run()
      return nil
    }, ctx)
    guard rc == 0 else {
      Unmanaged<AsyncBlockQueue>.fromOpaque(ctx).release()
      throw VirtioError(.system, "cannot start the I/O thread (pthread_create: \(rc))", errno: rc)
    }
    thread = tid
  }

  deinit {
    pthread_cond_destroy(cond)
    pthread_mutex_destroy(condLock)
    cond.deallocate()
    condLock.deallocate()
  }

  /// Stops the thread after the requests already handed over; later calls fail.
  public func close() {
    pthread_mutex_lock(condLock)
    stopping = true
    pthread_cond_signal(cond)
    pthread_mutex_unlock(condLock)
    if let t = thread {
      pthread_join(t, nil)
      thread = nil
    }
  }

  public func read(at offset: UInt64, length: Int) async throws(VirtioError) -> [UInt8] {
    try await perform(.read, offset, length, [])
  }

  public func write(_ bytes: [UInt8], at offset: UInt64) async throws(VirtioError) {
    _ = try await perform(.write, offset, bytes.count, bytes)
  }

  public func flush() async throws(VirtioError) { _ = try await perform(.flush, 0, 0, []) }

  public func discard(at offset: UInt64, length: Int) async throws(VirtioError) {
    _ = try await perform(.discard, offset, length, [])
  }

  public func writeZeroes(at offset: UInt64, length: Int) async throws(VirtioError) {
    _ = try await perform(.writeZeroes, offset, length, [])
  }

  private func perform(_ op: BlockOperation, _ offset: UInt64, _ length: Int, _ data: [UInt8]) async throws(VirtioError) -> [UInt8] {
    if (op == .read || op == .write) && (length > maxIOBytes || length <= 0) {
      throw VirtioError(.invalidArgument, "\(op) of \(length) bytes: the async queue moves 1...\(maxIOBytes) bytes per call (maxIOBytes)")
    }
    let r = await withCheckedContinuation { (c: CheckedContinuation<Result<[UInt8], VirtioError>, Never>) in
      pthread_mutex_lock(condLock)
      if stopping {
        pthread_mutex_unlock(condLock)
        c.resume(returning: .failure(VirtioError(.invalidArgument, "the async queue is closed")))
        return
      }
      incoming.append(Pending(op: op, offset: offset, length: length, data: data, done: c))
      pthread_cond_signal(cond)
      pthread_mutex_unlock(condLock)
    }
    return try r.get()
  }

  // MARK: the I/O thread

  private func run() {
    var q = queue.take()!
    var pool = self.pool.take()!
    var waiting: [Pending] = []
    var inFlight: [UInt64: (Pending, BlockBuffer?)] = [:]
    var nextTag: UInt64 = 1
    while true {
      // Take new requests: sleep only when nothing is in flight.
      pthread_mutex_lock(condLock)
      while incoming.isEmpty && inFlight.isEmpty && waiting.isEmpty && !stopping { pthread_cond_wait(cond, condLock) }
      waiting += incoming
      incoming.removeAll()
      let stop = stopping && waiting.isEmpty && inFlight.isEmpty
      pthread_mutex_unlock(condLock)
      if stop { break }

      var submitted = false
      while let p = waiting.first {
        var buffer: BlockBuffer? = nil
        if p.op == .read || p.op == .write {
          guard let b = pool.allocate() else { break }
          if p.op == .write { p.data.withUnsafeBytes { b.pointer.copyMemory(from: $0.baseAddress!, byteCount: p.length) } }
          buffer = b
        }
        let r = q.submit(BlockRequest(op: p.op, offset: p.offset, length: p.length, buffer: buffer, tag: nextTag))
        if r == .queueFull {
          if let b = buffer { pool.release(b) }
          break
        }
        waiting.removeFirst()
        if r != .queued {
          if let b = buffer { pool.release(b) }
          p.done.resume(returning: .failure(VirtioError(.refused, "\(p.op) of \(p.length) bytes at \(p.offset): \(r)")))
          continue
        }
        inFlight[nextTag] = (p, buffer)
        nextTag &+= 1
        submitted = true
      }
      if submitted { q.kick() }
      while let c = q.poll() {
        guard let (p, buffer) = inFlight.removeValue(forKey: c.tag) else { continue }
        var out: [UInt8] = []
        if c.status == .ok, p.op == .read, let b = buffer {
          out = Array(UnsafeRawBufferPointer(start: b.pointer, count: p.length))
        }
        if let b = buffer { pool.release(b) }
        if c.status == .ok {
          p.done.resume(returning: .success(out))
        } else {
          p.done.resume(returning: .failure(VirtioError(.ioFailed, "\(p.op) of \(p.length) bytes at offset \(p.offset) failed: \(c.status)")))
        }
      }
      if let why = q.brokenReason {
        for (_, (p, _)) in inFlight { p.done.resume(returning: .failure(VirtioError(.deviceFailed, "the device queue broke: \(why)"))) }
        inFlight.removeAll()
        for p in waiting { p.done.resume(returning: .failure(VirtioError(.deviceFailed, "the device queue broke: \(why)"))) }
        waiting.removeAll()
        continue
      }
      // Something in flight: sleep on the queue briefly, then look for new requests again.
      if !inFlight.isEmpty { _ = q.wait(timeoutMilliseconds: 1) }
    }
  }
}
