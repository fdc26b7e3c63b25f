import Glibc

/// The line protocol both check tools print, one check per line:
///   CHECK PASS <name>[: <detail>]
///   CHECK FAIL <name>: <reason>
///   <tool>: <note>
/// and each tool's own lines through `emit` (vio-guest-check's HOSTCHECK,
/// vio-vhost-check's RESULT). Each line is flushed at once, so it interleaves
/// correctly with a log on the same console and a script can react to it while
/// the program runs.
public final class Report {
  /// Leads each note: "vio-guest-check: …".
  public let tool: String
  public private(set) var passed = 0
  public private(set) var failed = 0

  public init(tool: String) { self.tool = tool }

  public func pass(_ name: String, _ detail: String = "") {
    passed += 1
    emit("CHECK PASS \(name)" + (detail.isEmpty ? "" : ": \(oneLine(detail))"))
  }

  public func fail(_ name: String, _ reason: String) {
    failed += 1
    emit("CHECK FAIL \(name): \(oneLine(reason))")
  }

  /// PASS when `ok`, else FAIL with `detail` as the reason.
  public func check(_ name: String, _ ok: Bool, _ detail: String) {
    if ok { pass(name, detail) } else { fail(name, detail) }
  }

  public func note(_ text: String) { emit("\(tool): \(text)") }

  public func emit(_ line: String) {
    print(line)
    fflush(nil)  // all C streams: stdout is not reachable safely from Swift 6 code
  }

  private func oneLine(_ s: String) -> String { String(s.map { $0 == "\n" || $0 == "\r" ? " " : $0 }) }
}
