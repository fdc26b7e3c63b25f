// VirtioVFIO — virtio-pci functions driven from a process through VFIO.
//
// Layers, bottom up (each file one concept):
//   (VirtioOS)                          syscalls (EINTR, errno → SysError), OwnedFD, eventfd/epoll
//   PCIAddress.swift, PCIFunction.swift BDF; sysfs: driver, IOMMU group, bind to vfio-pci, hand back
//   VFIOContainer / VFIOGroup / VFIODevice   the three VFIO handles (~Copyable, close once);
//                                       open errors turned into sentences that say what to do
//   PCICapabilities.swift               the virtio vendor capabilities and MSI-X (§4.1.4)
//   MMIO.swift                          BARs mmap'ed from the device fd; volatile register access
//   DMAArena.swift                      pinned memory (2 MiB hugetlb or 4 KiB), VFIO_IOMMU_MAP_DMA,
//                                       IOVA bump allocator — VirtioCore's DMAAllocator
//   VFIODMAMemory.swift                 a container's memory: DMAArena, or (VFIO's no-IOMMU
//                                       mode, /dev/vfio/noiommu-N) PhysicalDMAArena
//   Interrupts.swift                    one eventfd per MSI-X vector, epoll, counters
//   VFIOPCITransport*.swift             VirtioCore's Transport over all of the above
//   VFIOPCITransport+Session.swift      what VirtioCore's one session needs from VFIO
//                                       (SessionTransport): ACCESS_PLATFORM, MSI-X vectors,
//                                       the DMA arena, the function reset; VirtioPCI.open
//   VirtioPCIRegisters.swift            the virtio-pci registers in mapped BARs (§4.1.4),
//                                       written once for VFIO and uio
//   Pagemap.swift, PhysicalDMAArena.swift   no IOMMU: locked hugepages, physical addresses
//                                       from /proc/self/pagemap, contiguous runs
//   UIOPCITransport*.swift              no IOMMU (opt-in): uio_pci_generic, sysfs BARs and
//                                       config, polled; refuses ACCESS_PLATFORM (§6.1)
//
// Typical use (a driver generic over the ring layout):
//
//   var t = try VFIOPCITransport.open(PCIAddress("0000:00:02.0")!)      // function on vfio-pci
//   let features = try VirtioDevice.negotiate(&t, plan: plan)           // §3.1.1 steps 1–6
//   try VirtioDevice.run(t, features: features, plan: plan, &body)      // queues, DRIVER_OK, body.run(&session)
//
// or all three at once with `VirtioPCI.open(address, plan:, &body)`. Dropping the
// transport (or the session holding it) resets the device, turns MSI-X off,
// unmaps BARs and DMA, and closes device, group and container, in that order.

// VirtioCore's names (QueueSet, ConstructibleVirtqueue, RingLayout, Virtqueue, …)
// come with `import VirtioVFIO`, as they did when QueueSet lived here.
@_exported import VirtioCore
