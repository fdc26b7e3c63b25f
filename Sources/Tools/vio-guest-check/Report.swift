import CheckReport

/// The console protocol of the guest test bed (tools/guestbed/plan.py): CheckReport's
/// `CHECK PASS|FAIL` lines and
///   HOSTCHECK <kind> <args...>
extension Report {
  func hostcheck(_ args: String) { emit("HOSTCHECK \(args)") }
}
