import Glibc
import Logging
import VirtioVFIO

/// Command line: `vio-guest-check --net <BDF> --blk <BDF> [--log-level L] [--timeout-ms N]`.
/// Either device may be left out. The ring layout the test bed expects comes
/// from GUESTBED_RING (split/packed) when set.
struct Arguments {
  var net: PCIAddress?
  var blk: PCIAddress?
  var logLevel: Logger.Level = .info
  /// Longest wait for one interrupt or one kernel re-probe (TCG guests are slow).
  var timeoutMilliseconds = 15_000
  var expectedLayout: String? = nil
  /// The functions given are unbound from their drivers: only inside a test
  /// guest (the test bed exports GUESTBED_VARIANT), or with --in-test-guest.
  var confirmedGuest = false

  static let usage = """
    usage: vio-guest-check [--net BDF] [--blk BDF] [--log-level trace|debug|info|warning|error] [--timeout-ms N] [--in-test-guest]
    Takes each virtio-pci function from its kernel driver, drives it over VFIO
    (negotiate, queues, MSI-X, one request), hands it back, and prints
    CHECK PASS/FAIL lines. Run as root inside a test guest, never on a host.
    """

  static func parse(_ argv: [String]) -> Result<Arguments, ArgumentError> {
    var a = Arguments()
    var i = 1
    func value(_ flag: String) -> Result<String, ArgumentError> {
      guard i + 1 < argv.count else { return .failure(ArgumentError("\(flag) needs a value")) }
      i += 1
      return .success(argv[i])
    }
    while i < argv.count {
      let flag = argv[i]
      switch flag {
      case "--net", "--blk":
        guard case .success(let v) = value(flag) else { return .failure(ArgumentError("\(flag) needs a PCI address")) }
        guard let addr = PCIAddress(v) else { return .failure(ArgumentError("\(flag) \(v): not a PCI address (want 0000:00:02.0)")) }
        if flag == "--net" { a.net = addr } else { a.blk = addr }
      case "--log-level":
        guard case .success(let v) = value(flag), let level = Logger.Level(rawValue: v) else {
          return .failure(ArgumentError("--log-level wants trace, debug, info, notice, warning, error or critical"))
        }
        a.logLevel = level
      case "--timeout-ms":
        guard case .success(let v) = value(flag), let n = Int(v), n > 0 else {
          return .failure(ArgumentError("--timeout-ms wants a positive number"))
        }
        a.timeoutMilliseconds = n
      case "--in-test-guest":
        a.confirmedGuest = true
      case "-h", "--help":
        return .failure(ArgumentError(""))
      default:
        return .failure(ArgumentError("unknown argument \(flag)"))
      }
      i += 1
    }
    if a.net == nil && a.blk == nil { return .failure(ArgumentError("give --net and/or --blk")) }
    if let env = getenv("VIO_LOG_LEVEL"), let level = Logger.Level(rawValue: String(cString: env)) { a.logLevel = level }
    if let env = getenv("GUESTBED_RING") { a.expectedLayout = String(cString: env) }
    if getenv("GUESTBED_VARIANT") != nil { a.confirmedGuest = true }
    if !a.confirmedGuest {
      return .failure(
        ArgumentError(
          "refusing to run outside a test guest: this unbinds the given PCI functions from their drivers (a host whose disk or NIC is one of them dies); pass --in-test-guest inside a VM"
        ))
    }
    return .success(a)
  }
}

struct ArgumentError: Error {
  var message: String
  init(_ m: String) { message = m }
}
