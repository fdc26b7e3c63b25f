import VirtioCore

/// What both ring fuzzers read first: byte 1 the features (bit 0 EVENT_IDX,
/// 1 INDIRECT, 2 IN_ORDER), byte 2 the indirect table size (0…8).
public struct RingFuzzOptions {
  public let features: RingFeatures
  public let maxIndirect: Int

  public init(_ input: inout FuzzInput) {
    let f = input.u8()
    features = RingFeatures(eventIdx: f & 1 != 0, indirect: f & 2 != 0, inOrder: f & 4 != 0)
    maxIndirect = Int(input.u8() % 9)
  }
}

/// The program both ring fuzzers run: up to 4096 operations read from the
/// input — 0…5 the driver's (`DriverStep`), the next `deviceOperations` the
/// device's (`device(k, &input)` with k from 0; the target makes k = 0 its
/// well-behaved step), the last one marks the queue broken now and then —
/// then a drain: whatever the device left published must come back or break
/// the queue.
public enum RingProgram {
  public static func run<Q: Virtqueue & ~Copyable>(
    _ q: inout Q, _ input: inout FuzzInput, oracle: inout RingOracle,
    deviceOperations: UInt8, device: (UInt8, inout FuzzInput) -> Void
  ) {
    var steps = 0
    while !input.isEmpty, steps < 4096 {
      steps += 1
      let op = input.u8() % (7 + deviceOperations)
      if op < 6 {
        DriverStep.run(op, &q, &input, &oracle)
      } else if op < 6 + deviceOperations {
        device(op - 6, &input)
      } else if input.u8() < 4 {
        q.markBroken(.deviceStalled)
        require(q.brokenReason != nil, "markBroken left no reason")
      }
    }
    var polls = 0
    while polls < 2 * q.size + 2, DriverStep.poll(q.nextUsed(), q: q, oracle: &oracle) { polls += 1 }
  }
}
