import VirtioCore

extension SimTransport {
  /// §3.1.1 step 7 for one queue the driver has laid out, as tests that set a
  /// device up by hand do it (§4.1.5.1.3): its size and three areas (and
  /// `msixVector`) into queue `index`, then queue_enable.
  public mutating func enableQueue<Q: Virtqueue & ~Copyable>(
    _ index: Int, _ q: borrowing Q, msixVector: UInt16? = nil
  ) throws(VirtioError) {
    try configureQueue(
      index,
      QueueAddresses(
        size: q.size, descIOVA: q.descAreaIOVA, driverIOVA: q.driverAreaIOVA, deviceIOVA: q.deviceAreaIOVA,
        msixVector: msixVector))
    try enableQueue(index)
  }
}
