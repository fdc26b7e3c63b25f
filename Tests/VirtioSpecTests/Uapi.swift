import CUapiLayouts
import XCTest

/// The Linux uapi values, keyed by the C expression that produced them
/// ("sizeof(struct vring_desc)", "offsetof(struct vring_desc, len)", "VIRTIO_F_VERSION_1").
enum Uapi {
  static let values: [String: Int] = {
    var n = 0
    let p = uapi_values(&n)!
    var d: [String: Int] = [:]
    for i in 0..<n { d[String(cString: p[i].name)] = Int(p[i].value) }
    return d
  }()

  /// Kernel version of the installed headers, "6.1" style.
  static var headerVersion: String {
    let v = uapi_linux_version_code()
    return "\(v >> 16).\((v >> 8) & 0xFF)"
  }
}

extension XCTestCase {
  /// Asserts that the installed Linux header defines `name` with the value `swift`.
  func assertUapi(
    _ name: String, _ swift: Int, file: StaticString = #filePath, line: UInt = #line
  ) {
    guard let c = Uapi.values[name] else {
      XCTFail("\(name) is missing from the Linux \(Uapi.headerVersion) uapi headers", file: file, line: line)
      return
    }
    XCTAssertEqual(swift, c, "VirtioSpec disagrees with Linux uapi on \(name)", file: file, line: line)
  }

  /// For values newer than some supported headers (Debian 12 ships 6.1): the
  /// Swift value must equal the spec's; when the header has it, it must agree too.
  func assertPinned(
    _ name: String, _ swift: Int, spec: Int, _ why: String, file: StaticString = #filePath, line: UInt = #line
  ) {
    XCTAssertEqual(swift, spec, "\(name) must be \(spec) (\(why))", file: file, line: line)
    if let c = Uapi.values[name] {
      XCTAssertEqual(swift, c, "VirtioSpec disagrees with Linux uapi on \(name)", file: file, line: line)
    }
  }

  /// `assertUapi` for each entry of one header's table, the C name being
  /// `prefix` + key; a failure names the entry and points at the table.
  func assertUapi(
    prefix: String = "", _ table: KeyValuePairs<String, Int>, file: StaticString = #filePath, line: UInt = #line
  ) {
    for (name, swift) in table { assertUapi(prefix + name, swift, file: file, line: line) }
  }

  /// `assertUapi` of `offsetof(cStruct, field)` for each field of the table.
  func assertUapiOffsets(
    _ cStruct: String, _ table: KeyValuePairs<String, Int>, file: StaticString = #filePath, line: UInt = #line
  ) {
    for (field, swift) in table { assertUapi("offsetof(\(cStruct), \(field))", swift, file: file, line: line) }
  }

  /// A Swift struct laid out as the C one: `sizeof(cStruct)` (unless `size` is
  /// false) and the stored offset of each field against `offsetof(cStruct, field)`.
  func assertUapiLayout<T>(
    _ type: T.Type, _ cStruct: String, size: Bool = true, _ fields: KeyValuePairs<String, PartialKeyPath<T>>,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    if size { assertUapi("sizeof(\(cStruct))", MemoryLayout<T>.size, file: file, line: line) }
    for (field, key) in fields {
      assertUapi("offsetof(\(cStruct), \(field))", offset(key, file: file, line: line), file: file, line: line)
    }
  }

  /// `assertPinned` for each entry, the C name being `prefix` + key and the
  /// value a (Swift, spec) pair, all pinned for the same reason.
  func assertPinned(
    prefix: String = "", _ table: KeyValuePairs<String, (swift: Int, spec: Int)>, _ why: String,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    for (name, v) in table { assertPinned(prefix + name, v.swift, spec: v.spec, why, file: file, line: line) }
  }

  /// Swift field offset by key path.
  func offset<T>(_ key: PartialKeyPath<T>, file: StaticString = #filePath, line: UInt = #line) -> Int {
    guard let o = MemoryLayout<T>.offset(of: key) else {
      XCTFail("no stored offset for \(key)", file: file, line: line)
      return -1
    }
    return o
  }
}
