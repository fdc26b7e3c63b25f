internal import CVirtioOS

/// eventfd(2): a 64-bit counter the kernel wakes pollers on — kicks and calls
/// of vhost-user queues, MSI-X vectors, the stop request. `signal` and `drain`
/// are one system call each: no allocation, no throw, no reference count, so
/// they may sit on the data path.
package enum EventFD {
  /// A new eventfd (close-on-exec; non-blocking unless told otherwise).
  package static func create(nonBlocking: Bool = true) throws(SysError) -> OwnedFD {
    let fd = vio_os_eventfd(nonBlocking ? 1 : 0)
    guard fd >= 0 else { throw SysError("eventfd", advice: "raise the open-file limit (ulimit -n)") }
    return OwnedFD(adopting: fd)
  }

  /// Adds 1 to the counter (wakes the reader). False when the write failed.
  @discardableResult
  package static func signal(_ fd: Int32) -> Bool { vio_os_eventfd_signal(fd) == 0 }

  /// Reads and clears the counter: how many signals arrived, 0 when none.
  package static func drain(_ fd: Int32) -> UInt64 { vio_os_eventfd_drain(fd) }
}
