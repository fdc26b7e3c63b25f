import VirtioCore

/// The device a ring fuzzer plays against the driver: made over the queue's
/// ring memory, it runs `operations` kinds of step chosen by the input — step
/// 0 the well-behaved one (take available buffers, return them), the others
/// raw writes of whatever the device can reach.
public protocol RingFuzzDevice {
  static var operations: UInt8 { get }
  /// `ring` is the queue's descriptor area (HeapDMA: the IOVA is the address).
  init(ring: UnsafeMutableRawPointer, size: Int)
  mutating func step(_ kind: UInt8, _ input: inout FuzzInput, features: RingFeatures)
}

/// The program both ring fuzzers run. Input: byte 0 the queue size (mapped by
/// the target), byte 1 the features (bit 0 EVENT_IDX, 1 INDIRECT, 2
/// IN_ORDER), byte 2 the indirect table size (0…8), then up to 4096
/// operations: 0…5 the driver's (`DriverStep`), the next
/// `Device.operations` the device's, the last one marks the queue broken now
/// and then. Last a drain: whatever the device left published must come back
/// or break the queue.
public enum RingProgram {
  public static func run<Q: ConstructibleVirtqueue & ~Copyable, Device: RingFuzzDevice>(
    _: Q.Type, _: Device.Type, _ data: UnsafePointer<UInt8>?, _ count: Int, queueSize: (UInt8) -> Int
  ) -> CInt {
    var input = FuzzInput(data, count)
    let size = queueSize(input.u8())
    let f = input.u8()
    let features = RingFeatures(eventIdx: f & 1 != 0, indirect: f & 2 != 0, inOrder: f & 4 != 0)
    let maxIndirect = Int(input.u8() % 9)
    var dma = HeapDMA()
    guard var q = try? Q(index: 0, size: size, features: features, memory: &dma, maxIndirect: maxIndirect)
    else { fatalError("\(Q.layout) queue of \(size) could not be built") }
    var device = Device(ring: q.descAreaIOVA.heapPointer, size: size)
    var oracle = RingOracle(inOrder: features.inOrder)

    var steps = 0
    while !input.isEmpty, steps < 4096 {
      steps += 1
      let op = input.u8() % (7 + Device.operations)
      if op < 6 {
        DriverStep.run(op, &q, &input, &oracle)
      } else if op < 6 + Device.operations {
        device.step(op - 6, &input, features: features)
      } else if input.u8() < 4 {
        q.markBroken(.deviceStalled)
        require(q.brokenReason != nil, "markBroken left no reason")
      }
    }
    var polls = 0
    while polls < 2 * size + 2, DriverStep.poll(q.nextUsed(), q: q, oracle: &oracle) { polls += 1 }
    return 0
  }
}
