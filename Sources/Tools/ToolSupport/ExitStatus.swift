import ArgumentParser

/// The exit statuses of vio-fio, vio-fwd and vio-bind (docs/USAGE.md lists them):
/// the same number means the same thing in every tool.
public enum ExitStatus: Int32, Sendable {
  /// Done: the run finished, or was stopped by SIGINT/SIGTERM where that is a normal end (vio-fwd).
  case ok = 0
  /// A runtime failure: I/O errors, verify failures, a broken device, a refusal by the system
  /// or the device (bind refused, read-only device, a port that failed), a cut-short verify run.
  case failure = 1
  /// Bad usage (sysexits.h EX_USAGE): an unknown option or subcommand, a value that is not a
  /// number or out of range, options that contradict each other, a target path that is not
  /// what it must be (no such socket, not a socket). Nothing was done.
  case usage = 64

  public var code: ExitCode { ExitCode(rawValue) }
}
