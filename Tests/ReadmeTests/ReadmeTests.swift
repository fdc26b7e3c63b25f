import XCTest

/// README's Swift examples are the files in Examples/Snippets, which the
/// package builds (targets ReadmePacketIO and ReadmeBlockIO, each with only
/// its API module as dependency): an example that stops compiling, or a
/// README that drifts from the compiled file, fails here.
final class ReadmeTests: XCTestCase {
  func testEverySwiftBlockIsACompiledSnippet() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
    var blocks: [String] = []
    var current: [Substring]? = nil
    for line in readme.split(separator: "\n", omittingEmptySubsequences: false) {
      if current == nil, line == "```swift" {
        current = []
      } else if current != nil, line == "```" {
        blocks.append(current!.joined(separator: "\n") + "\n")
        current = nil
      } else if current != nil {
        current!.append(line)
      }
    }
    let snippets = ["Examples/Snippets/PacketIO/Forward.swift", "Examples/Snippets/BlockIO/WriteRead.swift"]
    XCTAssertEqual(blocks.count, snippets.count, "README's ```swift blocks and Examples/Snippets")
    for (block, file) in zip(blocks, snippets) {
      let compiled = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
      XCTAssertEqual(block, compiled, "README's block differs from \(file), which is what the build compiles")
    }
  }
}
