import ToolSupport
import XCTest

final class ListsTests: XCTestCase {
  func testIntegers() {
    XCTAssertEqual(Lists.integers("0-3,8,10-11", in: 0...100), [0, 1, 2, 3, 8, 10, 11])
    XCTAssertEqual(Lists.integers("1", in: 0...1), [1])
    XCTAssertEqual(Lists.integers("1,0,1", in: 0...1), [1, 0, 1])
    for bad in ["", ",", "1,", "3-1", "1-", "-1", "a", "1-2-3", "2", "1 ,0", "٣"] {
      XCTAssertNil(Lists.integers(bad, in: 0...1), bad)
    }
    XCTAssertNil(Lists.integers("0-99999999999", in: 0...Int.max), "bounded")
  }

  func testCPUs() throws {
    XCTAssertEqual(try Lists.cpus("1,2", option: "--cpus"), [1, 2])
    XCTAssertEqual(try Lists.cpus("0-3", option: "--cpus"), [0, 1, 2, 3])
    XCTAssertThrowsError(try Lists.cpus("1,1", option: "--cpus")) { e in
      XCTAssertTrue("\(e)".contains("twice"), "\(e)")
    }
    XCTAssertThrowsError(try Lists.cpus("x", option: "--cpus"))
  }

  func testHex() throws {
    XCTAssertEqual(try Lists.hex("6d5aFF", option: "--rss-key"), [0x6d, 0x5a, 0xff])
    XCTAssertEqual(try Lists.hex("6d:5a", option: "--rss-key"), [0x6d, 0x5a])
    for bad in ["", "6", "6g", "zz"] { XCTAssertThrowsError(try Lists.hex(bad, option: "--rss-key"), bad) }
  }
}
