/// The median of the runs' figures (the mean of the middle two for an even count).
public func median(_ xs: [Double]) -> Double {
  let s = xs.sorted()
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// `x` rounded to `digits` decimals, printed as Swift prints a Double ("1.5", "0.0").
public func fmt(_ x: Double, _ digits: Int = 2) -> String {
  var p = 1.0
  for _ in 0..<digits { p *= 10 }
  return String((x * p).rounded() / p)
}
