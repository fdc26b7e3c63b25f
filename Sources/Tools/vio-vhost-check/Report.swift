import CheckReport
import VirtioOS

/// The output protocol Tests/host/vhost-user.sh reads: CheckReport's
/// `CHECK PASS|FAIL` lines and
///   RESULT <key>=<value> ...      (numbers the script compares with the backend's own counters)
extension Report {
  func result(_ fields: KeyValuePairs<String, String>) {
    emit("RESULT " + fields.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
  }
}

func milliseconds(since start: UInt64) -> Int { Int((monotonicNanoseconds() &- start) / 1_000_000) }
