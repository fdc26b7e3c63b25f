#if canImport(Glibc)
  import Glibc
#endif

public typealias FuzzEntry = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
  _ argc: UnsafeMutablePointer<CInt>,
  _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
  _ callback: FuzzEntry
) -> CInt

/// A fuzz target's `main`: hands the command line to libFuzzer's driver
/// (LLVMFuzzerRunDriver, libFuzzer's documented entry for programs with their
/// own main). SwiftPM links an executable's main.swift as `main`, so
/// libFuzzer's own main is never pulled in; the target's
/// `LLVMFuzzerTestOneInput` is what runs per input.
public func runFuzzer(_ entry: FuzzEntry) -> Never {
  var argc = CommandLine.argc
  var argv = CommandLine.unsafeArgv
  exit(LLVMFuzzerRunDriver(&argc, &argv, entry))
}
