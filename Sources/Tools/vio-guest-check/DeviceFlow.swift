import CheckReport
import Logging
import VirtioCore
import VirtioSpec
import VirtioVFIO

/// What differs between the devices: what to negotiate, what to read from
/// device config, and which request to put through a queue.
protocol DeviceProfile {
  /// Check-name prefix: `net` or `blk`.
  var kind: String { get }
  var plan: VirtioOpenPlan { get }
  /// Reads the device-specific config (§5.x.4); (ok, one-line description).
  func describeConfig(_ transport: borrowing VFIOPCITransport, features: FeatureSet) -> (ok: Bool, text: String)
  /// Puts a request through a queue and reports it (CHECK lines), generic over the layout.
  func exercise<Q: ConstructibleVirtqueue & ~Copyable>(_ session: inout VirtioPCISession<Q>, report: Report, timeoutMilliseconds: Int)
}

extension VirtioOpenPlan {
  /// A modern device (VERSION_1 required) offered `wanted`, its queues counted from config by `queueCount`.
  static func modern(
    wanting wanted: [Int], queueCount: @escaping @Sendable (FeatureSet, borrowing VFIOPCITransport) -> Int
  ) -> VirtioOpenPlan {
    var p = VirtioOpenPlan(policy: FeaturePolicy(required: FeatureSet(bit: VirtioFeature.version1), wanted: FeatureSet(bits: wanted)))
    p.queueCount = queueCount
    return p
  }
}

/// DMA memory for the request of check `name`, or nil after its FAIL line.
func requestBuffer<Q: ConstructibleVirtqueue & ~Copyable>(
  _ s: inout VirtioPCISession<Q>, byteCount: Int, alignment: Int, check name: String, report: Report
) -> DMARegion? {
  do throws(VirtioError) {
    return try s.transport.dma.allocate(byteCount: byteCount, alignment: alignment)
  } catch {
    report.fail(name, "DMA allocation: \(error.message)")
    return nil
  }
}

/// Runs one device through the whole cycle, one CHECK line per step:
/// kernel driver → (negative: open while on virtio-pci) → bind vfio-pci →
/// open → negotiate → config → queues + MSI-X → DRIVER_OK → request +
/// interrupt → reset → back to the kernel driver.
struct DeviceFlow<Profile: DeviceProfile> {
  let profile: Profile
  let address: PCIAddress
  let report: Report
  let logger: Logger
  let arguments: Arguments

  func run() {
    let k = profile.kind
    let function = PCIFunction(address, logger: logger)
    guard function.exists else {
      report.fail("\(k)-device", "no PCI function \(address) in /sys/bus/pci/devices")
      return
    }
    defer { handBack(function) }

    // 1. Start from the kernel's driver, whatever the test bed did.
    do throws(VirtioError) {
      let before = function.driver ?? "none"
      if before != "virtio-pci" { try function.returnToKernel(timeoutMilliseconds: arguments.timeoutMilliseconds) }
      report.pass("\(k)-kernel-driver", "on \(function.driver ?? "none") (was \(before)); \(interfaces(function))")
    } catch {
      report.fail("\(k)-kernel-driver", error.message)
    }

    // 2. Negative: opening a function the kernel still drives must fail and name the driver.
    if function.driver == "virtio-pci" {
      report.note("\(k): opening \(address) while virtio-pci holds it — an error is expected")
      do throws(VirtioError) {
        _ = try VFIOPCITransport.open(address, logger: logger)
        report.fail("\(k)-not-viable-error", "VFIO opened \(address) although virtio-pci holds it")
      } catch {
        let ok = error.code == .groupNotViable && error.message.contains("virtio-pci") && error.message.contains("\(address)")
          && error.message.contains("vio-bind")
        report.check("\(k)-not-viable-error", ok, "\(error.code): \(error.message)")
      }
    }

    // 3. Take it: unbind virtio-pci, bind vfio-pci.
    do throws(VirtioError) {
      let before = function.driver ?? "none"
      try function.bindToVFIO(timeoutMilliseconds: arguments.timeoutMilliseconds)
      report.pass("\(k)-bind-vfio", "\(before) → \(function.driver ?? "none"), IOMMU group \(function.iommuGroup.map { String($0) } ?? "?")")
    } catch {
      report.fail("\(k)-bind-vfio", error.message)
      return
    }

    // 4. Open through VFIO.
    var transport: VFIOPCITransport
    do throws(VirtioError) {
      transport = try VFIOPCITransport.open(address, logger: logger)
    } catch {
      report.fail("\(k)-open", error.message)
      return
    }
    report.pass(
      "\(k)-open",
      "\(transport.deviceType), IOMMU group \(transport.iommuGroup) \(transport.iommuType), \(transport.msixVectorCount) MSI-X vectors, "
        + "function reset \(transport.supportsFunctionReset ? "offered" : "not offered"); \(transport.capabilities.summary)")

    // 5. Negotiate (§3.1.1 steps 1–6).
    let plan = profile.plan
    let accepted: FeatureSet
    do throws(VirtioError) {
      accepted = try VirtioDevice.negotiate(&transport, plan: plan)
    } catch {
      report.fail("\(k)-negotiate", error.message)
      return
    }
    let layout = accepted.contains(bit: VirtioFeature.ringPacked) ? "packed" : "split"
    report.pass("\(k)-negotiate", "\(layout) ring; accepted \(accepted.names(device: transport.deviceType).joined(separator: ","))")
    if let want = arguments.expectedLayout {
      report.check("\(k)-ring-layout", want == layout, "negotiated \(layout), the test bed booted \(want) devices")
    }

    // 6. Device config.
    let cfg = profile.describeConfig(transport, features: accepted)
    report.check("\(k)-config", cfg.ok, cfg.text)

    // 7. Queues, vectors, DRIVER_OK, then the request (the body); dropping the session resets and releases.
    var body = ExerciseBody(profile: profile, report: report, timeoutMilliseconds: arguments.timeoutMilliseconds, logger: logger)
    do throws(VirtioError) {
      try VirtioDevice.run(transport, features: accepted, plan: plan, &body)
    } catch {
      report.fail("\(k)-queues", error.message)
    }
  }

  /// 8. Back to the kernel driver; its interface must reappear.
  private func handBack(_ function: PCIFunction) {
    let k = profile.kind
    guard function.driver != "virtio-pci" else { return }
    do throws(VirtioError) {
      let driver = try function.returnToKernel(timeoutMilliseconds: arguments.timeoutMilliseconds)
      let i = function.kernelInterfaces()
      let has = k == "net" ? !i.net.isEmpty : !i.block.isEmpty
      report.check("\(k)-handback", driver == "virtio-pci" && has, "\(driver); \(interfaces(function))")
    } catch {
      report.fail("\(k)-handback", error.message)
    }
  }

  private func interfaces(_ f: PCIFunction) -> String {
    let i = f.kernelInterfaces()
    if !i.net.isEmpty { return "net interface \(i.net.joined(separator: ","))" }
    if !i.block.isEmpty { return "block device \(i.block.joined(separator: ","))" }
    return "no kernel interface"
  }
}

/// Runs after DRIVER_OK with the live session, whatever its layout.
struct ExerciseBody<Profile: DeviceProfile>: VirtioSessionBody {
  typealias Device = VFIOPCITransport
  let profile: Profile
  let report: Report
  let timeoutMilliseconds: Int
  let logger: Logger

  mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ s: inout VirtioPCISession<Q>) throws(VirtioError) {
    let k = profile.kind
    var sizes: [String] = []
    for i in 0..<s.queueCount {
      sizes.append("q\(i):\(s.queues[i].size)/v\(s.transport.vector(ofQueue: i).map { String($0) } ?? "-")")
    }
    report.pass(
      "\(k)-queues",
      "\(s.queueCount) \(s.layout) queues with MSI-X (\(s.transport.enabledVectorCount) vectors, config vector \(s.transport.configVector)): \(sizes.joined(separator: " ")); "
        + "DMA \(s.transport.dma.mappedBytes >> 10) KiB in \(s.transport.dma.mappingCount) mapping(s), \(s.transport.dma.usesHugePages ? "2 MiB hugepages" : "4 KiB pages")")
    let status = s.transport.readStatus()
    report.check("\(k)-driver-ok", status.contains(.driverOK) && !status.contains(.failed) && !status.contains(.deviceNeedsReset), "device_status \(status)")

    // Negative: a second open of the same group while this one holds it.
    do throws(VirtioError) {
      report.note("\(k): opening \(s.transport.address) a second time — an error is expected")
      _ = try VFIOPCITransport.open(s.transport.address, logger: logger)
      report.fail("\(k)-busy-error", "a second VFIO open of \(s.transport.address) succeeded")
    } catch {
      report.check("\(k)-busy-error", error.code == .deviceBusy, "\(error.code): \(error.message)")
    }

    profile.exercise(&s, report: report, timeoutMilliseconds: timeoutMilliseconds)

    do throws(VirtioError) {
      let functionReset = try s.reset()
      let after = s.transport.readStatus()
      report.check(
        "\(k)-reset", after.rawValue == 0,
        "device_status \(after) after the virtio reset\(functionReset ? " and VFIO_DEVICE_RESET" : " (no VFIO function reset offered)")")
    } catch {
      report.fail("\(k)-reset", error.message)
    }
  }
}
