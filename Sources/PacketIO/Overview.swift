// PacketIO — one packet API over three paths:
//
//   pci:0000:00:02.0        a virtio-net function taken from the kernel through VFIO
//   vhost-user:/path.sock   a virtio-net device played by a backend process (DPDK's vhost)
//   eth1                    a kernel interface through AF_PACKET with mmap'ed
//                           TPACKET_V2 rings (the fallback, and the baseline)
// and, for tests, any `SessionTransport` (`PortGroup.open(transport:)`).
//
// Either way the types are the same: a `PortGroup` opens the ports (every
// VFIO function in one IOMMU container, every vhost-user backend on one
// memfd, so one pool serves all of them), hands out one `PortQueue` per
// (port, queue) for the worker thread that owns it, and `BufferPool`s whose
// `PacketBuffer` handles are 16-byte values. `PortQueue.receive(into:pool:)` /
// `transmit(_:pool:)` (or a `PacketBurst`) move bursts and return counts; the
// backend is chosen once per burst by a switch over three concrete cases
// (split ring, packed ring, socket) — no existential, no allocation, no
// reference counting, no throw per packet. A received buffer can be
// transmitted as is on any port of the group (zero copy between virtio ports;
// one copy into the socket ring on the kernel path). `import PacketIO` is all
// an app needs (Exports.swift, OSLayer.swift).
//
// Files, bottom up:
//   PortAddress, PortOptions, PortInfo      what to open and what it is
//   ProcessMemory, OwnedArray, StatsBoard      memory for kernel-only pools, owned arrays, counters shared with the main thread
//   VirtioNetPort                           one virtio-net port over any transport: negotiate (§5.1.3), queues,
//                                           MQ and RX mode (§5.1.6.5), link, NEEDS_RESET, device restarts
//   VirtioNetOpen+Transports                what differs per transport at open: VFIO (preflight, shared container),
//                                           vhost-user (shared memory sizing)
//   VirtioPortQueue                         a worker's virtio pair + the restart hand-over word
//   KernelPort, PacketSocketQueue           AF_PACKET: sockets, fanout, TPACKET rings
//   PortQueue, PacketBurst                  the per-queue burst API
//   PortGroup                               opening a set of ports, pools, link state, stats
//   WorkerQueues                            hybrid mode: poll, re-arm, sleep on eventfds / sockets
//   NetFallback                             a pci: port the userspace path cannot take, on its kernel interface
