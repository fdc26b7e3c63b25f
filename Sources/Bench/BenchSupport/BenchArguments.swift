import Glibc

/// The benchmarks' command line: `--name value` options and bare flags, read
/// where they are used; a bad number ends the run with status 64 (EX_USAGE).
public struct BenchArguments {
  /// The benchmark's name, leading its error messages.
  public let tool: String
  public let words: [String]

  public init(tool: String, _ words: [String] = Array(CommandLine.arguments.dropFirst())) {
    self.tool = tool
    self.words = words
  }

  /// Whether the bare flag `name` was given.
  public func contains(_ name: String) -> Bool { words.contains(name) }

  /// The word after `name`, or `fallback` when `name` is absent or last.
  public func option(_ name: String, _ fallback: String) -> String {
    guard let i = words.firstIndex(of: name), i + 1 < words.count else { return fallback }
    return words[i + 1]
  }

  /// A positive integer option; anything else exits 64 with a message.
  public func intOption(_ name: String, _ fallback: Int) -> Int {
    let s = option(name, String(fallback))
    guard let v = Int(s), v > 0 else {
      print("\(tool): \(name) needs a positive integer, got '\(s)'")
      exit(64)
    }
    return v
  }
}
