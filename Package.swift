// swift-tools-version:6.2
import PackageDescription

// Layering (enforced here, see docs/ARCHITECTURE.md):
//   VirtioSpec      pure Swift: structs, bits, layouts of the virtio 1.x spec
//   CVirtioAtomics  C: fences, acquire/release loads/stores, volatile MMIO (no OS headers)
//   VirtioCore      rings, negotiation, device init, Transport + DMA protocols (no OS module)
//   VirtioOS        the OS layer: SysError, OwnedFD, Sys (EINTR-retrying calls, sysfs files),
//                   eventfd, epoll/poll, the monotonic clock, StopSignal, WorkerThread
//                   (swift-system's FileDescriptor/Errno underneath; C shim CVirtioOS)
//   CVirtioSys      C: VFIO ioctl numbers, vfio_irq_set, uapi layout asserts
//   VirtioVFIO      the VFIO-PCI transport (the only place that touches VFIO, BARs, MSI-X)
//   VirtioSim       test support: a simulated device playing the device side of the rings
// C shims live in Sources/Shims/<what they hold>: OS, VFIO, VhostUser, LibPCI,
// KernelBlock (io_uring through liburing, block ioctls), KernelPacket (AF_PACKET rings).
let strict: [SwiftSetting] = [.enableExperimentalFeature("Lifetimes")]

/// A public API (BlockIO, PacketIO), built alike: its device's driver over
/// both transports (VFIO, vhost-user), and the kernel path through its shim.
func ioLibrary(_ name: String, driver: String, kernelShim: String) -> Target {
  .target(
    name: name,
    dependencies: [
      .byName(name: driver), "VirtioVFIO", "VirtioVhostUser", "VirtioCore", "VirtioSpec", "VirtioOS", .byName(name: kernelShim),
      .product(name: "Logging", package: "swift-log"),
    ],
    swiftSettings: strict)
}

let package = Package(
  name: "swift-virtio",
  products: [
    .library(name: "VirtioCore", targets: ["VirtioCore"]),
    .library(name: "VirtioVFIO", targets: ["VirtioVFIO"]),
    .library(name: "VirtioBlk", targets: ["VirtioBlk"]),
    .library(name: "VirtioNet", targets: ["VirtioNet"]),
    .library(name: "BlockIO", targets: ["BlockIO"]),
    .library(name: "PacketIO", targets: ["PacketIO"]),
    .executable(name: "vio-fio", targets: ["vio-fio"]),
    .executable(name: "block-log", targets: ["block-log"]),
    .executable(name: "packet-relay", targets: ["packet-relay"]),
    .executable(name: "vio-fwd", targets: ["vio-fwd"]),
    .executable(name: "vio-bind", targets: ["vio-bind"]),
    .executable(name: "ring-bench", targets: ["ring-bench"]),
    .executable(name: "blk-bench", targets: ["blk-bench"]),
    .executable(name: "vio-guest-check", targets: ["vio-guest-check"]),
    .library(name: "VirtioVhostUser", targets: ["VirtioVhostUser"]),
    .executable(name: "vio-vhost-check", targets: ["vio-vhost-check"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
    .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    // Metrics (issue 16): swift-metrics' API (CoreMetrics), a Prometheus registry, and
    // swift-nio's HTTP/1.1 server for the scrape endpoint (no Foundation in the tools; see ARCHITECTURE).
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
  ],
  targets: [
    .target(name: "VirtioSpec"),
    .target(name: "CVirtioAtomics"),
    .target(name: "CVirtioSys", path: "Sources/Shims/VFIO"),
    // The OS layer (issue 12): one SysError, one owned descriptor, eventfd/epoll, clock, threads.
    .target(name: "CVirtioOS", path: "Sources/Shims/OS"),
    .target(
      name: "VirtioOS", dependencies: ["CVirtioOS", .product(name: "SystemPackage", package: "swift-system")],
      swiftSettings: strict),
    .target(
      name: "VirtioCore", dependencies: ["VirtioSpec", "CVirtioAtomics", .product(name: "Logging", package: "swift-log")],
      swiftSettings: strict + [.enableExperimentalFeature("SuppressedAssociatedTypes")]),
    .target(
      name: "VirtioVFIO",
      dependencies: ["VirtioCore", "VirtioSpec", "VirtioOS", "CVirtioSys", "CVirtioAtomics", .product(name: "Logging", package: "swift-log")],
      swiftSettings: strict),
    .target(name: "VirtioBlk", dependencies: ["VirtioCore", "VirtioSpec"], swiftSettings: strict),
    .target(name: "VirtioNet", dependencies: ["VirtioCore", "VirtioSpec"], swiftSettings: strict),
    // Public APIs: one per device class, userspace (VFIO) or kernel path behind the same types.
    // The kernel block path's io_uring is liburing's (Debian: liburing-dev).
    .target(name: "CBlockSys", path: "Sources/Shims/KernelBlock", linkerSettings: [.linkedLibrary("uring")]),
    .target(name: "CPacketSys", path: "Sources/Shims/KernelPacket"),
    ioLibrary("BlockIO", driver: "VirtioBlk", kernelShim: "CBlockSys"),
    ioLibrary("PacketIO", driver: "VirtioNet", kernelShim: "CPacketSys"),
    // The tools' shared command-line checks: overflow-, NaN- and unit-checked numbers, exit statuses.
    .target(
      name: "ToolSupport", dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
      path: "Sources/Tools/ToolSupport"),
    .testTarget(name: "ToolSupportTests", dependencies: ["ToolSupport"]),
    // The tools' metrics exporter (issue 16): PacketIO/BlockIO counters sampled off the data path,
    // published through swift-metrics into a Prometheus registry, served over HTTP by swift-nio (text and JSON).
    .target(
      name: "VioMetrics",
      dependencies: [
        "PacketIO", "BlockIO", "ToolSupport", .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Prometheus", package: "swift-prometheus"), .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
      ],
      path: "Sources/Tools/VioMetrics"),
    .testTarget(
      name: "VioMetricsTests",
      dependencies: ["VioMetrics", "PacketIO", "BlockIO", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
    // vio-fio's self-describing verify header, a library so a fuzz target can link it.
    .target(name: "VioFioVerify", dependencies: ["BlockIO"], path: "Sources/Tools/VioFioVerify"),
    .executableTarget(
      name: "vio-fio",
      dependencies: [
        "BlockIO", "CVirtioAtomics", "ToolSupport", "VioFioVerify", "VioMetrics", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Histogram", package: "hdrhistogram-swift"), .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/Tools/vio-fio"),
    .executableTarget(
      name: "vio-fwd",
      dependencies: [
        "CVirtioAtomics", "PacketIO", "ToolSupport", "VioMetrics", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/Tools/vio-fwd"),
    // Binding: libpci enumeration, in-use detection, preflight, vfio-pci moves.
    .target(name: "CLibPCI", path: "Sources/Shims/LibPCI", linkerSettings: [.linkedLibrary("pci")]),
    .target(name: "DeviceBinding", dependencies: ["CLibPCI", "VirtioVFIO", "VirtioCore", "VirtioSpec", "VirtioOS"]),
    .executableTarget(
      name: "vio-bind",
      dependencies: [
        "DeviceBinding", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/Tools/vio-bind"),
    .target(
      name: "VirtioSim", dependencies: ["VirtioCore", "VirtioSpec", "CVirtioAtomics", .product(name: "Logging", package: "swift-log")],
      swiftSettings: strict),
    // Test support for the net driver: the device side of a queue pair, step by step (over VirtioSim's rings).
    .target(name: "VirtioNetSim", dependencies: ["VirtioNet", "VirtioSim", "VirtioCore", "VirtioSpec"], swiftSettings: strict),
    // Benchmarks: the C split-ring baseline and a malloc counter live beside the Swift bench.
    // BenchSupport / CBenchThread: what the benchmarks share (arguments, DMA arena, figures; the C device thread).
    .target(name: "CBenchThread", path: "Sources/Bench/CBenchThread"),
    .target(name: "BenchSupport", dependencies: ["VirtioCore"], path: "Sources/Bench/BenchSupport", swiftSettings: strict),
    .target(name: "CRingBaseline", dependencies: ["CBenchThread"], path: "Sources/Bench/CRingBaseline"),
    .target(name: "CAllocCounter", path: "Sources/Bench/CAllocCounter"),
    // net-bench: the net driver's burst path against a C device loop (issue 5).
    .target(name: "CNetDevice", dependencies: ["CBenchThread"], path: "Sources/Bench/CNetDevice"),
    .executableTarget(
      name: "net-bench", dependencies: ["VirtioNet", "VirtioCore", "VirtioSpec", "VirtioOS", "CNetDevice", "CAllocCounter", "BenchSupport"],
      path: "Sources/Bench/net-bench", swiftSettings: strict),
    .executableTarget(
      name: "ring-bench",
      dependencies: ["VirtioCore", "VirtioSpec", "VirtioSim", "CRingBaseline", "CAllocCounter", "BenchSupport"],
      path: "Sources/Bench/ring-bench", swiftSettings: strict),
    // BlockIO's data path: requests per second and heap allocations per request (must be 0).
    .executableTarget(
      name: "blk-bench",
      dependencies: ["BlockIO", "VirtioBlk", "VirtioCore", "VirtioSpec", "VirtioSim", "CAllocCounter", "BenchSupport"],
      path: "Sources/Bench/blk-bench"),
    // The check tools' PASS/FAIL report (vio-guest-check, vio-vhost-check).
    .target(name: "CheckReport", path: "Sources/Tools/CheckReport"),
    .executableTarget(
      name: "vio-guest-check",
      dependencies: ["CheckReport", "VirtioVFIO", "VirtioOS", "VirtioCore", "VirtioSpec", .product(name: "Logging", package: "swift-log")],
      path: "Sources/Tools/vio-guest-check"),
    // vhost-user transport (issue 7): the same drivers against DPDK's vhost and qemu-storage-daemon, no VM.
    .target(name: "CVhostSys", path: "Sources/Shims/VhostUser"),
    .target(
      name: "VirtioVhostUser",
      dependencies: ["VirtioCore", "VirtioSpec", "VirtioOS", "CVhostSys", .product(name: "Logging", package: "swift-log")],
      swiftSettings: strict),
    .executableTarget(
      name: "vio-vhost-check",
      dependencies: [
        "VirtioVhostUser", "VirtioNet", "VirtioBlk", "VirtioCore", "VirtioSpec", "VirtioOS", "CAllocCounter", "CVirtioAtomics", "CheckReport",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/Tools/vio-vhost-check", swiftSettings: strict),
    .testTarget(
      name: "VhostUserTests",
      dependencies: ["VirtioVhostUser", "VirtioCore", "VirtioSpec", "VirtioOS", "CVhostSys", .product(name: "Logging", package: "swift-log")]),
    .target(name: "CUapiLayouts", path: "Tests/CUapiLayouts"),
    .testTarget(name: "DeviceBindingTests", dependencies: ["DeviceBinding"]),
    .testTarget(name: "VirtioSpecTests", dependencies: ["VirtioSpec", "VirtioSim", "CUapiLayouts"]),
    .testTarget(name: "VirtioCoreTests", dependencies: ["VirtioCore", "VirtioSpec", "VirtioSim"]),
    .testTarget(name: "VirtioNetTests", dependencies: ["VirtioNet", "VirtioNetSim", "VirtioSim", "VirtioCore", "VirtioSpec"]),
    .testTarget(
      name: "PacketIOTests", dependencies: ["PacketIO", "VirtioNet", "VirtioVFIO", "VirtioVhostUser", "VirtioCore", "VirtioOS", "VirtioSim", "VirtioNetSim"]),
    // VFIO transport without hardware: capability walk, setup errors on fake sysfs, MSI-X eventfds.
    .testTarget(name: "VirtioVFIOTests", dependencies: ["VirtioVFIO", "VirtioOS", "VirtioCore", "VirtioSpec"]),
    // The OS layer without hardware: eventfd, epoll, poll, owned fds, errors, files, clock, threads.
    .testTarget(
      name: "VirtioOSTests", dependencies: ["VirtioOS", .product(name: "SystemPackage", package: "swift-system")]),
    // virtio-blk: request queues and BlockIO's virtio path against a simulated block device (VirtioSim + a RAM disk).
    .testTarget(name: "VirtioBlkTests", dependencies: ["VirtioBlk", "BlockIO", "VirtioCore", "VirtioSpec", "VirtioSim"]),
    // BlockIO's kernel path (io_uring, O_DIRECT) on temporary files, CRC32C, the async layer.
    .testTarget(name: "BlockIOTests", dependencies: ["BlockIO", "VirtioVhostUser"]),
    // The example storage app: an append-only checksummed log embedding BlockIO (Examples/BlockLog).
    .target(name: "BlockLog", dependencies: ["BlockIO"], path: "Examples/BlockLog/Sources/BlockLog"),
    .executableTarget(name: "block-log", dependencies: ["BlockLog", "BlockIO"], path: "Examples/BlockLog/Sources/block-log"),
    .testTarget(name: "BlockLogTests", dependencies: ["BlockLog", "BlockIO"], path: "Examples/BlockLog/Tests/BlockLogTests"),
    // README's Swift examples, compiled (ReadmeTests checks README shows these files verbatim).
    .target(name: "ReadmePacketIO", dependencies: ["PacketIO"], path: "Examples/Snippets/PacketIO"),
    .target(name: "ReadmeBlockIO", dependencies: ["BlockIO"], path: "Examples/Snippets/BlockIO"),
    .testTarget(name: "ReadmeTests", dependencies: ["ReadmePacketIO", "ReadmeBlockIO"]),
    // The example packet app: a MAC-swapping reflector embedding PacketIO (Examples/PacketRelay); only `import PacketIO`.
    .target(name: "PacketRelay", dependencies: ["PacketIO"], path: "Examples/PacketRelay/Sources/PacketRelay"),
    .executableTarget(name: "packet-relay", dependencies: ["PacketRelay", "PacketIO"], path: "Examples/PacketRelay/Sources/packet-relay"),
    .testTarget(
      name: "PacketRelayTests", dependencies: ["PacketRelay", "PacketIO", "VirtioNetSim", "VirtioSim", "VirtioSpec"],
      path: "Examples/PacketRelay/Tests/PacketRelayTests"),
  ]
)

// API documentation (issue 16): swift-docc-plugin, only when VIO_DOCS is set —
// `tools/docs` sets it and builds in .build-docs — so a plain build never
// resolves or fetches the plugin.
if Context.environment["VIO_DOCS"] != nil {
  package.dependencies.append(.package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"))
}

// Fuzz targets (issue 13; Fuzz/README.md): libFuzzer entry points over every
// parser of device- or backend-written data. Declared only when VIO_FUZZ is
// set — `tools/fuzz` sets it and builds with -sanitize=fuzzer,address into
// .build-fuzz — so a plain `swift build` / `swift test` never sees them and
// never links libFuzzer. Same package, so `package` seams reach them.
if Context.environment["VIO_FUZZ"] != nil {
  let fuzzTargets: [(name: String, dependencies: [Target.Dependency])] = [
    ("fuzz-split-ring", ["VirtioCore", "VirtioSpec"]),
    ("fuzz-packed-ring", ["VirtioCore", "VirtioSpec"]),
    ("fuzz-device-config", ["VirtioNet", "VirtioBlk", "BlockIO", "VirtioCore", "VirtioSpec"]),
    ("fuzz-pci-caps", ["VirtioVFIO", "VirtioCore"]),
    ("fuzz-net-rx", ["VirtioNet", "PacketIO", "VirtioCore", "VirtioSpec"]),
    ("fuzz-verify-header", ["VioFioVerify"]),
    ("fuzz-tcp-segment", ["VirtioNet"]),
    ("fuzz-tpacket", ["PacketIO", "VirtioCore"]),
    ("fuzz-vhost-reply", ["VirtioVhostUser", "VirtioCore", .product(name: "Logging", package: "swift-log")]),
  ]
  package.targets.append(
    .target(name: "FuzzSupport", dependencies: ["VirtioCore", "VirtioSpec"], path: "Fuzz/Sources/FuzzSupport"))
  for t in fuzzTargets {
    package.targets.append(
      .executableTarget(
        name: t.name, dependencies: ["FuzzSupport"] + t.dependencies, path: "Fuzz/Sources/\(t.name)",
        swiftSettings: strict))
  }
}
