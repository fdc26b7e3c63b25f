import Glibc
import VirtioCore
import VirtioOS
import XCTest

@testable import VirtioVFIO

/// MSI-X delivery is eventfds + epoll: signal the eventfds by hand and check
/// the waits, the timeout and the per-vector counters.
final class InterruptTests: XCTestCase {
  func signal(_ i: borrowing MSIXInterrupts, _ v: Int, _ n: UInt64 = 1) {
    var value = n
    XCTAssertEqual(write(i.eventfds[v], &value, 8), 8)
  }

  func testWaitReturnsTheVectorsCount() throws {
    let irq = try MSIXInterrupts(count: 3)
    signal(irq, 1, 2)
    XCTAssertEqual(irq.wait(vector: 1, timeoutMilliseconds: 1000), .fired(count: 2))
    XCTAssertEqual(irq.taken(vector: 1), 2)
    XCTAssertEqual(irq.wait(vector: 1, timeoutMilliseconds: 20), .timedOut)
  }

  func testOtherVectorsStayPendingWhileWaiting() throws {
    let irq = try MSIXInterrupts(count: 3)
    signal(irq, 2)
    XCTAssertEqual(irq.wait(vector: 0, timeoutMilliseconds: 30), .timedOut)
    XCTAssertEqual(irq.taken(vector: 2), 1, "counted while waiting for vector 0")
    XCTAssertEqual(irq.poll(vector: 2), 1, "and still there for its own waiter")
    XCTAssertEqual(irq.poll(vector: 2), 0)
  }

  func testTimeoutIsRespected() throws {
    let irq = try MSIXInterrupts(count: 1)
    let t0 = monotonicNanoseconds()
    XCTAssertEqual(irq.wait(vector: 0, timeoutMilliseconds: 50), .timedOut)
    let ms = (monotonicNanoseconds() - t0) / 1_000_000
    XCTAssertGreaterThanOrEqual(ms, 45)
    XCTAssertLessThan(ms, 1000)
  }

  func testNoVectorsIsAnEmptySet() throws {
    let irq = try MSIXInterrupts(count: 0)
    XCTAssertEqual(irq.count, 0)
  }
}

/// QueueSet: in-place access, take-out, and each element released exactly once.
final class QueueSetTests: XCTestCase {
  final class Counter: @unchecked Sendable { var released: [Int] = [] }

  struct Token: ~Copyable {
    let id: Int
    let counter: Counter
    deinit { counter.released.append(id) }
  }

  func testTakeAndDeinitReleaseEachOnce() {
    let counter = Counter()
    do {
      var set = QueueSet<Token>(capacity: 3)
      for i in 0..<3 { set.append(Token(id: i, counter: counter)) }
      XCTAssertEqual(set[1].id, 1)
      let taken = set.take(1)
      XCTAssertFalse(set.contains(1))
      XCTAssertTrue(set.contains(2))
      XCTAssertEqual(taken.id, 1)
      XCTAssertEqual(counter.released, [])
      _ = consume taken
      XCTAssertEqual(counter.released, [1])
    }
    XCTAssertEqual(counter.released.sorted(), [0, 1, 2])
  }
}
