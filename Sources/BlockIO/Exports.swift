// What a BlockIO user names, from the modules below it: `import BlockIO` is
// enough to open devices, move blocks, read counters and catch errors.
@_exported import struct VirtioCore.VirtioError
@_exported import enum VirtioCore.BrokenReason
@_exported import enum VirtioCore.RingLayout
@_exported import protocol VirtioCore.SessionTransport
@_exported import struct VirtioVFIO.PCIAddress
@_exported import enum VirtioVFIO.HugePagePolicy
@_exported import struct VirtioVFIO.KernelFallbackReason
@_exported import enum VirtioVhostUser.VhostUserEndpoint
