import Glibc
import VirtioOS

/// The output protocol Tests/host/vhost-user.sh reads:
///   CHECK PASS <name>[: <detail>]
///   CHECK FAIL <name>: <reason>
///   RESULT <key>=<value> ...      (numbers the script compares with the backend's own counters)
/// Each line is flushed at once so the script can react to it while the program runs.
final class Report {
  private(set) var passed = 0
  private(set) var failed = 0

  func pass(_ name: String, _ detail: String = "") {
    passed += 1
    emit("CHECK PASS \(name)" + (detail.isEmpty ? "" : ": \(oneLine(detail))"))
  }

  func fail(_ name: String, _ reason: String) {
    failed += 1
    emit("CHECK FAIL \(name): \(oneLine(reason))")
  }

  func check(_ name: String, _ ok: Bool, _ detail: String) {
    if ok { pass(name, detail) } else { fail(name, detail) }
  }

  func result(_ fields: KeyValuePairs<String, String>) {
    emit("RESULT " + fields.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
  }

  func note(_ text: String) { emit("vio-vhost-check: \(text)") }

  func emit(_ line: String) {
    print(line)
    fflush(nil)
  }

  private func oneLine(_ s: String) -> String { String(s.map { $0 == "\n" || $0 == "\r" ? " " : $0 }) }
}

func milliseconds(since start: UInt64) -> Int { Int((monotonicNanoseconds() &- start) / 1_000_000) }
