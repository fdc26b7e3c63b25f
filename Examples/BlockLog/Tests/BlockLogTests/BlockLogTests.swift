import BlockIO
import BlockLog
import Glibc
import XCTest

/// The example log on a temporary file (BlockIO's kernel path): round trip,
/// recovery after a torn commit, stale records after a recovery, reopen.
final class BlockLogTests: XCTestCase {
  var path = ""

  override func setUp() {
    var t = Array("/tmp/blocklog-test-XXXXXX".utf8CString)
    let fd = mkstemp(&t)
    ftruncate(fd, 4 << 20)
    close(fd)
    path = t.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
  }

  override func tearDown() { unlink(path) }

  func open() throws -> BlockDevice { try BlockDevice.open(path) }

  func testAppendCommitReopen() throws {
    try BlockLog.format(try open())
    do {
      var log = try BlockLog(opening: try open())
      XCTAssertEqual(log.recovery.records, 0)
      XCTAssertEqual(try log.append(Array("first".utf8)), 1)
      XCTAssertEqual(try log.append([UInt8](repeating: 7, count: 5000)), 2)
      XCTAssertEqual(try log.append([]), 3)
      try log.commit()
      XCTAssertEqual(try log.records().map(\.sequence), [1, 2, 3])
    }
    var again = try BlockLog(opening: try open())
    XCTAssertEqual(again.recovery.records, 3)
    let recs = try again.records()
    XCTAssertEqual(recs[0].payload, Array("first".utf8))
    XCTAssertEqual(recs[1].payload, [UInt8](repeating: 7, count: 5000))
    XCTAssertEqual(recs[2].payload, [])
    XCTAssertEqual(try again.append(Array("fourth".utf8)), 4)
    try again.commit()
    XCTAssertEqual(try BlockLog(opening: try open()).recovery.records, 4)
  }

  func testUncommittedRecordsAreNotThere() throws {
    try BlockLog.format(try open())
    do {
      var log = try BlockLog(opening: try open())
      _ = try log.append(Array("kept".utf8))
      try log.commit()
      _ = try log.append(Array("never committed".utf8))
    }
    XCTAssertEqual(try BlockLog(opening: try open()).recovery.records, 1)
  }

  /// A commit torn in the middle (a record's bytes half old, half new) ends
  /// the log at that record; appends continue there, and the stale records of
  /// the torn commit that lie beyond never come back.
  func testTornCommitAndStaleRecords() throws {
    try BlockLog.format(try open())
    var bs = 0
    do {
      var log = try BlockLog(opening: try open())
      bs = log.blockSize
      for i in 1...10 { _ = try log.append(Array("record \(i)".utf8)) }
      try log.commit()
    }
    // Tear record 8 (block 8): flip a payload byte behind the log's back.
    let fd = Glibc.open(path, O_RDWR)
    var b: UInt8 = 0
    pread(fd, &b, 1, off_t(8 * bs + 34))
    b ^= 0xFF
    pwrite(fd, &b, 1, off_t(8 * bs + 34))
    close(fd)
    do {
      var log = try BlockLog(opening: try open())
      XCTAssertEqual(log.recovery.records, 7)
      XCTAssertEqual(log.recovery.tailBlock, 8)
      XCTAssertTrue(log.recovery.reason.contains("torn"), log.recovery.reason)
      // Records 9 and 10 of the old epoch still sit at blocks 9 and 10.
      XCTAssertEqual(try log.append(Array("new 8".utf8)), 8)
      try log.commit()
    }
    var log = try BlockLog(opening: try open())
    XCTAssertEqual(log.recovery.records, 8, "old record 9 is stale: older epoch than new record 8")
    XCTAssertEqual(try log.records().last?.payload, Array("new 8".utf8))
  }

  func testNotALogAndTooLarge() throws {
    do {
      _ = try BlockLog(opening: try open())
      XCTFail("opened a log on a device that holds none")
    } catch let e as BlockLogError {
      guard case .notALog(let why) = e else { return XCTFail("\(e)") }
      XCTAssertTrue(why.contains("format it first"))
    }
    try BlockLog.format(try open())
    var log = try BlockLog(opening: try open(), stagingBytes: 8192)
    do {
      _ = try log.append([UInt8](repeating: 0, count: 9000))
      XCTFail("a record larger than the staging buffer was taken")
    } catch {
      guard case .tooLarge = error else { return XCTFail("\(error)") }
    }
    // Many records across several commits (staging fills up and commits by itself).
    for i in 0..<100 { _ = try log.append([UInt8](repeating: UInt8(i), count: 1000)) }
    try log.commit()
    XCTAssertEqual(try log.records().count, 100)
    XCTAssertEqual(try BlockLog(opening: try open()).recovery.records, 100)
  }
}
