import Glibc

/// The console protocol of the guest test bed (tools/guestbed/plan.py):
///   CHECK PASS <name>[: <detail>]
///   CHECK FAIL <name>: <reason>
///   HOSTCHECK <kind> <args...>
/// Each line is flushed at once so it interleaves correctly with the log on the console.
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

  /// PASS when `ok`, else FAIL with `detail` as the reason.
  func check(_ name: String, _ ok: Bool, _ detail: String) {
    if ok { pass(name, detail) } else { fail(name, detail) }
  }

  func hostcheck(_ args: String) { emit("HOSTCHECK \(args)") }

  func note(_ text: String) { emit("vio-guest-check: \(text)") }

  private func emit(_ line: String) {
    print(line)
    fflush(nil)  // all C streams: stdout is not reachable safely from Swift 6 code
  }

  private func oneLine(_ s: String) -> String {
    String(s.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
  }
}
