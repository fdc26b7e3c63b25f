import SystemPackage

/// An open file descriptor this value owns: closed exactly once, by `close()`
/// or when the owner goes away. Never copied, so never closed twice; handed
/// over with `detach()`.
package struct OwnedFD: ~Copyable {
  package let raw: Int32

  package init(adopting raw: Int32) {
    precondition(raw >= 0, "OwnedFD needs a valid descriptor")
    self.raw = raw
  }

  /// The descriptor as swift-system's type, for its read/write calls (borrowed:
  /// still closed by this owner).
  package var descriptor: FileDescriptor { FileDescriptor(rawValue: raw) }

  package consuming func close() {
    Sys.close(raw)
    discard self
  }

  /// Gives up ownership: the caller closes the returned descriptor.
  package consuming func detach() -> Int32 {
    let fd = raw
    discard self
    return fd
  }

  deinit { Sys.close(raw) }
}
