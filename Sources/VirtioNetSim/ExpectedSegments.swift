import VirtioNet

/// What a test expects from segmentation offload: `frame` (one contiguous
/// TCP super-packet) cut by `TCPSegmentation` into its MSS-sized frames.
/// Empty when the frame cannot be segmented.
public func expectedSegments(of frame: [UInt8], mss: Int) -> [[UInt8]] {
  frame.withUnsafeBytes { b in
    guard case .success(let l) = TCPSegmentation.layout(b.baseAddress!, length: frame.count, mss: mss) else { return [] }
    var out = [UInt8](repeating: 0, count: 70000)
    return (0..<l.segmentCount).map { i in
      let n = out.withUnsafeMutableBytes { TCPSegmentation.write(segment: i, of: l, from: b.baseAddress!, into: $0.baseAddress!, capacity: 70000) }
      return Array(out[0..<n])
    }
  }
}
