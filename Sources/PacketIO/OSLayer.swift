// PacketIO's users get the OS layer's public API with `import PacketIO`:
// `StopSignal` (SIGINT / SIGTERM or a requested stop), `WorkerThread`,
// `monotonicNanoseconds()`, `threadCPUNanoseconds()`, `processCPUNanoseconds()`
// and `SysError` (what a failed thread start throws). They live in VirtioOS.
@_exported import VirtioOS
