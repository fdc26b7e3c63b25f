// BlockIO's users get the OS layer's public API with `import BlockIO`:
// `monotonicNanoseconds()` (the clock vio-fio times with), `StopSignal`,
// `WorkerThread` and `SysError`. They live in VirtioOS.
@_exported import VirtioOS
