import BlockIO
import FuzzSupport
import VirtioBlk
import VirtioCore
import VirtioNet
import VirtioSpec

// virtio-net (§5.1.4) and virtio-blk (§5.2.4) device config spaces as any
// device may present them: any length of structure, any bytes, any offered
// features, config_generation changing between reads (§2.5.1) — parsed by
// NetConfig / BlockConfig over a transport that traps on a read outside the
// structure, then turned into what the drivers derive from them (the control
// queue index, BlockDeviceInfo's sizes and limits).
//
// Checked: no trap (overflow, out-of-structure read); a config that keeps
// changing is refused with .configUnstable; derived values stay sane.
//
// Input: byte 0 (bit 0: blk, else net), u64 features, byte n, n generation
// values, byte structure length (0…96), then the structure's bytes.

@_cdecl("LLVMFuzzerTestOneInput")
public func deviceConfigFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(data, size)
  let blk = input.bool()
  let features = FeatureSet(low: input.u64())
  let generations = input.bytes(Int(input.u8() % 80))
  let length = Int(input.u8() % 97)
  var config = input.bytes(length)
  config += [UInt8](repeating: 0, count: length - config.count)
  let t = ConfigTransport(deviceType: blk ? .block : .net, config: config, generations: generations)
  do throws(VirtioError) {
    if blk {
      let c = try BlockConfig(reading: t, features: features)
      require(c.blockSize >= 512, "block size \(c.blockSize) below 512")
      let info = BlockDeviceInfo(
        virtio: c, target: "fuzz", queueCount: c.numQueues, queueDepth: 128, maxTransferBytes: 1 << 20, serial: nil,
        details: "")
      require(info.maxTransferBytes >= 0 && info.maxTransferBytes <= 1 << 20, "max transfer \(info.maxTransferBytes) above the cap")
      require(info.optimalIOSize >= 0, "optimal I/O size \(info.optimalIOSize) negative")
    } else {
      let c = try NetConfig(reading: t, features: features)
      require(c.maxQueuePairs >= 1, "\(c.maxQueuePairs) queue pairs")
      if let q = c.controlQueue(features: features) { require(q >= 2, "control queue \(q)") }
      _ = c.mac?.description
    }
  } catch {
    require(error.code == .configUnstable, "unexpected error \(error)")
  }
  return 0
}
