// What a PacketIO user names, from the modules below it: `import PacketIO`
// is enough to open ports, move packets, read counters and catch errors.
@_exported import struct VirtioCore.PacketBuffer
@_exported import struct VirtioCore.BufferPool
@_exported import struct VirtioCore.VirtioError
@_exported import enum VirtioCore.BrokenReason
@_exported import enum VirtioCore.RingLayout
@_exported import protocol VirtioCore.SessionTransport
@_exported import struct VirtioNet.NetQueueStats
@_exported import struct VirtioNet.MACAddress
@_exported import struct VirtioNet.NetOffloads
@_exported import struct VirtioVFIO.PCIAddress
@_exported import struct VirtioVFIO.VFIOPCIOptions
@_exported import enum VirtioVFIO.HugePagePolicy
@_exported import struct VirtioVFIO.KernelFallbackReason
@_exported import enum VirtioVhostUser.VhostUserEndpoint
@_exported import struct VirtioNet.RSSConfig
@_exported import struct VirtioNet.ReceivedHash
@_exported import enum VirtioNet.NetHashTypeNames
@_exported import enum VirtioSpec.Toeplitz
@_exported import enum VirtioSpec.NetHashType
@_exported import enum VirtioSpec.NetHashReport
