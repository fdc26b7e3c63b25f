import ToolSupport
import XCTest

/// The tools' JSON writer: what a parser downstream (jq, Python's json) needs.
final class JSONTests: XCTestCase {
  func testQuoteEscapesWhatJSONRequires() {
    XCTAssertEqual(JSON.quote("plain"), "\"plain\"")
    XCTAssertEqual(JSON.quote("a\"b\\c"), "\"a\\\"b\\\\c\"")
    XCTAssertEqual(JSON.quote("line\nnext\ttab"), "\"line\\nnext\\ttab\"")
    XCTAssertEqual(JSON.quote("\u{1}\u{1f}"), "\"\\u0001\\u001f\"", "other control characters as \\u escapes, not dropped")
    XCTAssertEqual(JSON.quote("pci:0000:00:03.0 → é"), "\"pci:0000:00:03.0 → é\"")
  }

  func testNestingAndCommas() {
    var j = JSON()
    j.open("{")
    j.key("name"); j.string("blk0")
    j.key("ops"); j.open("[")
    j.uint(1); j.int(-2); j.bool(true); j.raw("0.5")
    j.close("]")
    j.key("empty"); j.open("{"); j.close("}")
    j.close("}")
    XCTAssertEqual(j.text, "{\"name\": \"blk0\", \"ops\": [1, -2, true, 0.5], \"empty\": {}}")
  }
}
