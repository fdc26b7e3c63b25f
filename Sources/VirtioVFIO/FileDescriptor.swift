/// An open file descriptor this value owns: closed exactly once, by `close()`
/// or when the owner goes away. Never copied, so never closed twice.
struct OwnedFD: ~Copyable {
  let raw: Int32

  init(adopting raw: Int32) {
    precondition(raw >= 0, "OwnedFD needs a valid descriptor")
    self.raw = raw
  }

  consuming func close() {
    Sys.close(raw)
    discard self
  }

  deinit { Sys.close(raw) }
}
