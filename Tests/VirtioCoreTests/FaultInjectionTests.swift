import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// Every device fault the simulation injects ends the same way: the queue is
/// broken, nextUsed() says .broken, brokenReason says why in words, nothing
/// crashes, and the queue refuses further work.
final class FaultInjectionTests: XCTestCase {
  func testWrongLength() throws {
    for split in [true, false] {
      try run(split, .wrongLength(extra: 1), after: 2, posts: 4, says: "wrote 65 bytes") { reason, _ in
        guard case .usedLengthTooLarge(_, 65, 64) = reason else { return false }
        return true
      }
    }
  }

  func testRepeatedID() throws {
    for split in [true, false] {
      try run(split, .repeatedID, after: 1, posts: 3, says: "had not made available") { reason, _ in
        guard case .usedIDNotInFlight = reason else { return false }
        return true
      }
    }
  }

  func testIDNeverPosted() throws {
    // One buffer at a time: id/head 0 is in flight, 3 never was.
    for split in [true, false] {
      try run(split, .usedID(3), after: 0, posts: 1, says: "used id 3") { reason, _ in reason == .usedIDNotInFlight(id: 3) }
    }
  }

  func testIDOutOfRange() throws {
    for split in [true, false] {
      try run(split, .usedID(8), after: 1, posts: 2, says: "outside the queue") { reason, _ in reason == .usedIDOutOfRange(id: 8, queueSize: 8) }
    }
    // Split ids are 32 bits in the used ring.
    try run(true, .usedID(0x1_0002), after: 0, posts: 1, says: "outside the queue") { reason, _ in
      reason == .usedIDOutOfRange(id: 0x1_0002, queueSize: 8)
    }
  }

  func testUsedIndexJump() throws {
    try run(true, .usedIndexJump(by: 9), after: 1, posts: 2, says: "used index") { reason, _ in
      guard case .usedIndexJump(_, _, 8) = reason else { return false }
      return true
    }
  }

  func testPackedBadWrapState() throws {
    // Three buffers complete normally (slots 0-2, wrap 1); slot 3 gets AVAIL=0, USED=1.
    try run(false, .badWrapState, after: 3, posts: 4, says: "wrap counter 1") { reason, used in
      used == 3 && reason == .packedBadWrapState(slot: 3, flags: VirtqDescFlags.used, expectedWrap: true)
    }
  }

  func testStallHitsTheCallersDeadline() throws {
    for split in [true, false] {
      try run(split, .stall, after: 2, posts: 4, stall: true, says: "stopped completing") { reason, used in used == 2 && reason == .deviceStalled }
    }
  }

  /// Posts `posts` single writable 64-byte buffers to a device with `fault`
  /// armed after `after` good completions, polls until the queue breaks (or,
  /// for a stall, until a short deadline expires and the caller marks it), and
  /// checks the outcome.
  func run(
    _ split: Bool, _ fault: SimDevice.Fault, after: Int, posts: Int, stall: Bool = false, says words: String,
    file: StaticString = #filePath, line: UInt = #line,
    _ check: (BrokenReason, _ usedBeforeBreak: Int) -> Bool
  ) throws {
    if split {
      try runOn(SplitVirtqueue.self, fault, after: after, posts: posts, stall: stall, words: words, file: file, line: line, check)
    } else {
      try runOn(PackedVirtqueue.self, fault, after: after, posts: posts, stall: stall, words: words, file: file, line: line, check)
    }
  }

  func runOn<Q: TestableQueue & ~Copyable>(
    _: Q.Type, _ fault: SimDevice.Fault, after: Int, posts: Int, stall: Bool, words: String,
    file: StaticString, line: UInt, _ check: (BrokenReason, Int) -> Bool
  ) throws {
    var l = try Live<Q>(size: 8, behaviour: .fill(0x5A)) { $0.inject(fault, afterCompletions: after) }
    var used = 0
    var posted = 0
    let name = "\(Q.self) \(fault)"
    while true {
      if posted < posts {
        XCTAssertEqual(l.q.add(.writable(l.iova(posted), 64), token: UInt64(posted)), .added, name, file: file, line: line)
        posted += 1
        l.kick()
        continue
      }
      guard let r = l.waitUsed(timeout: stall ? 0.3 : deadlineSeconds) else {
        guard stall else { return XCTFail("\(name): neither used nor broken within the deadline", file: file, line: line) }
        // The caller's deadline expired with buffers in flight.
        XCTAssertGreaterThan(l.q.inFlight, 0, name, file: file, line: line)
        l.q.markBroken(.deviceStalled)
        break
      }
      if case .used(let u) = r {
        XCTAssertEqual(u, UsedBuffer(token: UInt64(used), length: 64), name, file: file, line: line)
        used += 1
        continue
      }
      XCTAssertEqual(r, .broken, name, file: file, line: line)
      break
    }
    guard let reason = l.q.brokenReason else { return XCTFail("\(name): not broken", file: file, line: line) }
    XCTAssertTrue(check(reason, used), "\(name): unexpected \(reason) after \(used) used", file: file, line: line)
    XCTAssertTrue(l.q.isBroken)
    XCTAssertFalse(reason.description.isEmpty)
    XCTAssertTrue(
      reason.description.contains(words), "\(name): \"\(reason.description)\" should say \"\(words)\"",
      file: file, line: line)
    // Once broken, the queue only reports.
    for _ in 0..<3 { XCTAssertEqual(l.q.nextUsed(), .broken, name, file: file, line: line) }
    XCTAssertEqual(l.q.add(.writable(l.iova(0), 8), token: 99), .broken, name, file: file, line: line)
    XCTAssertFalse(l.q.publish(), name, file: file, line: line)
    l.q.markBroken(.deviceGone)
    XCTAssertEqual(l.q.brokenReason, reason, "\(name): the first reason stays", file: file, line: line)
    XCTAssertTrue(l.device.driverBugs.isEmpty, "\(name): the driver did nothing wrong: \(l.device.driverBugs)")
  }
}
