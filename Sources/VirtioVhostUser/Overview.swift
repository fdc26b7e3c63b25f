// VirtioVhostUser — the same driver stack against a vhost-user backend
// (DPDK's vhost library behind dpdk-testpmd, qemu-storage-daemon's
// vhost-user-blk export) on the host, no VM: what DPDK calls virtio-user.
//
// Layers, bottom up (each file one concept):
//   CVhostSys (C, Sources/Shims/VhostUser) unix sockets with SCM_RIGHTS, memfd, the kick function
//   (VirtioOS)                           errno, owned descriptors, eventfd/epoll, time
//   VhostUserSpec.swift                  the protocol: requests, flags, protocol features, payload encoding
//   VhostUserChannel.swift               the connection: connect/listen (retrying), framing, replies, REPLY_ACK
//   SharedMemory.swift                   the memfd both sides map; VirtioCore's DMAAllocator (IOVA = our address)
//   QueueNotifiers.swift                 kick and call eventfds; the doorbell; waiting for a call
//   VhostUserTransport*.swift            VirtioCore's Transport: status, features and net config emulated,
//                                        rings started and stopped, reconnect after a backend restart
//   VhostUserSession.swift               the opening sequence (§3.1.1), as VirtioVFIO's VirtioPCI does it
//
// Typical use (a driver generic over the ring layout):
//
//   var t = try VhostUserTransport.open(.client("/tmp/vhost.sock"), deviceType: .net)
//   let features = try VhostUser.negotiate(&t, plan: plan)
//   try VhostUser.run(t, features: features, plan: plan, &body)      // body.run(&session)
//
// or `VhostUser.open(endpoint, deviceType:, plan:, &body)`.
