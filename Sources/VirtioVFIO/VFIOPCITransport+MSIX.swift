import VirtioCore
import VirtioOS
import VirtioSpec

extension VFIOPCITransport {
  /// Turns MSI-X on with one eventfd per vector for vectors 0..<count
  /// (VFIO_DEVICE_SET_IRQS, DATA_EVENTFD | ACTION_TRIGGER). Call before
  /// assigning vectors with `setConfigVector` / `configureQueue`.
  public mutating func enableMSIX(vectors count: Int) throws(VirtioError) {
    guard count >= 1, count <= msixVectorCount else {
      let e = VirtioError(
        .invalidArgument, "\(address) has \(msixVectorCount) MSI-X vectors; cannot enable \(count) (QEMU: raise the device's vectors= property)")
      logger.error("MSI-X setup failed", metadata: ["step": "msix", "reason": "\(e.message)"])
      throw e
    }
    // VFIO (before Linux 6.5) cannot resize an enabled MSI-X block: turn it off first.
    if interrupts.count > 0 { device.disableMSIX() }
    let fresh: MSIXInterrupts
    do throws(SysError) {
      fresh = try MSIXInterrupts(count: count)
    } catch {
      logger.error("MSI-X setup failed", metadata: ["step": "msix", "reason": "\(error)"])
      throw VirtioError(.transport, "cannot create \(count) eventfds for \(address): \(error.reason) (raise the open-files limit?)", errno: error.errno)
    }
    do throws(SysError) {
      try device.setMSIX(eventfds: fresh.eventfds)
    } catch {
      logger.error("MSI-X setup failed", metadata: ["step": "msix", "reason": "\(error)"])
      throw VirtioError(.transport, "cannot route \(count) MSI-X vectors of \(address) to eventfds: \(error.reason)", errno: error.errno)
    }
    // The old set (if any) is closed here, after the kernel switched to the new eventfds.
    interrupts = fresh
    logger.info("MSI-X enabled", metadata: ["vectors": "\(count)", "of": "\(msixVectorCount)"])
  }

  /// Vectors routed to eventfds (0 until `enableMSIX`).
  public var enabledVectorCount: Int { interrupts.count }

  /// §4.1.5.1.2: msix_config ← vector (nil: NO_VECTOR), then read back; the
  /// device answers NO_VECTOR when it could not assign it, which is an error.
  public mutating func setConfigVector(_ vector: UInt16?) throws(VirtioError) {
    let wanted = vector ?? virtioMSINoVector
    common.write16(CommonCfg.config_msix_vector, wanted)
    let got = common.read16(CommonCfg.config_msix_vector)
    logger.debug("msix_config", metadata: ["wrote": "\(wanted)", "read": "\(got)"])
    if let v = vector, got != v {
      let msg =
        "\(deviceType) \(address) could not assign MSI-X vector \(v) to configuration changes (msix_config reads back 0x\(String(got, radix: 16)), §4.1.5.1.2); use fewer vectors or run without config interrupts"
      logger.error("config vector refused", metadata: ["step": "msix", "reason": "\(msg)"])
      throw VirtioError(.queueSetup, msg)
    }
    registers.configVector = got
  }

  /// Waits until MSI-X vector `vector` fires or the timeout passes (negative: forever).
  /// For interrupt / hybrid mode: call the queue's `enableInterrupts()` first, and
  /// poll it once more when it reports buffers already pending.
  public func waitForInterrupt(vector: UInt16, timeoutMilliseconds: Int) -> InterruptWait {
    guard Int(vector) < interrupts.count else { return .failed(errno: 22) }  // EINVAL: vector not enabled
    return interrupts.wait(vector: Int(vector), timeoutMilliseconds: timeoutMilliseconds)
  }

  /// Waits for the vector assigned to queue `index`; `.failed(EINVAL)` when it has none.
  public func waitForQueueInterrupt(_ index: Int, timeoutMilliseconds: Int) -> InterruptWait {
    guard let v = vector(ofQueue: index) else { return .failed(errno: 22) }
    return waitForInterrupt(vector: v, timeoutMilliseconds: timeoutMilliseconds)
  }

  /// Interrupts taken on `vector` since MSI-X was enabled.
  public func interruptsTaken(vector: UInt16) -> UInt64 { interrupts.taken(vector: Int(vector)) }
}

extension VFIOPCITransport {
  /// The eventfd MSI-X vector `vector` signals (nil: not enabled). Borrowed:
  /// valid while this transport lives and MSI-X stays enabled; never close it.
  ///
  /// For a queue owner that sleeps on its own queue's interrupt on its own
  /// thread (poll(2) on this fd, then read(2) its 8-byte count). Do not mix
  /// with `waitForInterrupt` on the same transport: that call drains every
  /// vector that fired, including ones another thread is waiting for.
  public func interruptEventFD(vector: UInt16) -> Int32? {
    Int(vector) < interrupts.count ? interrupts.eventfds[Int(vector)] : nil
  }

  /// The eventfd of the vector assigned to queue `index` (nil: the queue has none).
  public func interruptEventFD(queue index: Int) -> Int32? {
    vector(ofQueue: index).flatMap { interruptEventFD(vector: $0) }
  }

  /// The eventfd of the configuration-change vector (§4.1.5.1.2), nil when none.
  public var configInterruptEventFD: Int32? {
    configVector == virtioMSINoVector ? nil : interruptEventFD(vector: configVector)
  }
}
