// PacketIO — one packet API over two paths:
//
//   pci:0000:00:02.0   a virtio-net function taken from the kernel through VFIO
//                      and driven from this process (VirtioNet's queue pairs)
//   eth1               a kernel interface through AF_PACKET with mmap'ed
//                      TPACKET_V2 rings (the fallback, and the baseline)
//
// Either way the types are the same: a `PortGroup` opens the ports (every
// VFIO function in one IOMMU container, so one DMA pool serves all of them),
// hands out one `PortQueue` per (port, queue) for the worker thread that owns
// it, and `BufferPool`s whose `PacketBuffer` handles are 16-byte values.
// `PortQueue.receive(into:pool:)` / `transmit(_:pool:)` move bursts and return
// counts; the backend is chosen once per burst by a switch over three
// concrete cases (split ring, packed ring, socket) — no existential, no
// allocation, no reference counting, no throw per packet. A received buffer
// can be transmitted as is on any port of the group (zero copy between VFIO
// ports; one copy into the socket ring on the kernel path).
//
// Files, bottom up:
//   PortAddress, PortOptions, PortInfo      what to open and what it is
//   HostMemory, Cells, StatsBoard           memory for pools, owned cells, counters shared with the main thread
//   VirtioNetPort                           VFIO: open, negotiate (§5.1.3), queues, MQ and RX mode (§5.1.6.5)
//   KernelPort, PacketSocketQueue           AF_PACKET: sockets, fanout, TPACKET rings
//   PortQueue                               the per-queue burst API
//   PortGroup                               opening a set of ports, pools, link state, stats
//   QueueWaiter                             hybrid mode: poll, re-arm, sleep on eventfds / sockets
//   OSLayer                                 re-exports VirtioOS: WorkerThread, StopSignal, the clocks
