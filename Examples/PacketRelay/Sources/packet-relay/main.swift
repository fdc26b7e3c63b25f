// packet-relay PORT... — reflects every frame back out of the port it came in
// on, MAC addresses swapped, until Ctrl-C. The example app of PacketIO
// (Examples/PacketRelay); vio-fwd is the full forwarder.
import Glibc
import PacketIO
import PacketRelay

let ports = Array(CommandLine.arguments.dropFirst())
guard !ports.isEmpty, !ports.contains(where: { $0.hasPrefix("-") }) else {
  print("usage: packet-relay PORT...   (pci:DDDD:BB:DD.F, vhost-user:/path.sock or an interface name)")
  exit(64)
}
StopSignal.install()
do throws(VirtioError) {
  var relay = try Relay(ports: ports)
  for p in relay.group.ports { print("\(p.address): \(p.path), \(p.detail)") }
  let stats = try relay.run(until: { _ in StopSignal.requested })
  for (i, s) in stats.enumerated() {
    print("\(relay.group.ports[i].address): received \(s.rxPackets), sent \(s.txPackets), dropped \(s.txDropped)")
  }
} catch {
  print("packet-relay: \(error.message)")
  exit(error.code == .invalidArgument ? 64 : 1)
}
