import BlockIO

/// Writes one block at offset 0 of `target`, reads it back and compares.
func writeThenRead(_ target: String) -> Bool {
  do throws(VirtioError) {
    let device = try BlockDevice.open(target)  // "pci:0000:00:03.0", "vhost-user:/tmp/blk.sock", "/dev/vdb"
    var queue = try device.makeQueue(0)
    var pool = try device.makeBufferPool(count: 2, bufferSize: 4096)
    guard let out = pool.allocate(), let back = pool.allocate() else { return false }
    out.bytes.initializeMemory(as: UInt8.self, repeating: 0x5A)
    guard queue.write(from: out, at: 0, tag: 1) == .queued else { return false }
    queue.kick()
    while queue.poll() == nil { _ = queue.wait(timeoutMilliseconds: 1000) }
    guard queue.read(into: back, at: 0, tag: 2) == .queued else { return false }
    queue.kick()
    var done: BlockIOCompletion? = nil
    while done == nil { done = queue.poll() }
    return done?.status == .ok && back.bytes.elementsEqual(out.bytes)
  } catch {
    print("write-then-read: \(error.message)")
    return false
  }
}
