import FuzzSupport
import Glibc
import Logging
import VirtioCore
import VirtioVhostUser

// The vhost-user frontend's handshake (vhost-user.rst "Communication":
// GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES with REPLY_ACK,
// GET_QUEUE_NUM, SET_OWNER, GET_CONFIG for blk) against a backend whose
// whole byte stream is the fuzz input: any reply headers (request code,
// flags, size), payloads of any length, acks with any status, a stream that
// ends anywhere. The frontend reads it through the real VhostUserChannel
// framing over a socketpair.
//
// Checked: no trap and no read outside a message (ASan); a bad reply ends in
// a VirtioError with a message, and a handshake that succeeds leaves the
// config the device type needs (12 bytes emulated for net, the backend's 60
// for blk).
//
// Input: byte 0 (bit 0: blk, else net), then the backend's replies.

let quiet = Logger(label: "fuzz-vhost-reply", factory: { _ in SwiftLogNoOpLogHandler() })

@_cdecl("LLVMFuzzerTestOneInput")
public func vhostReplyFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(data, size)
  let blk = input.bool()
  let stream = input.bytes(16384)
  var fds: [Int32] = [-1, -1]
  guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { fatalError("socketpair: errno \(errno)") }
  // The backend says everything at once, then stops talking: every read ends in data or EOF, never a wait.
  let written = stream.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
  require(written == stream.count, "wrote \(written) of \(stream.count) bytes into the socketpair")
  shutdown(fds[1], Int32(SHUT_WR))
  defer { close(fds[1]) }
  let channel = VhostUserChannel(endpoint: .client("/fuzz/vhost.sock"), logger: quiet, replyTimeoutMilliseconds: 1000)
  channel.adopt(connectedSocket: fds[0])
  let state = VhostDeviceState(queueCount: 2)
  let options = VhostUserOptions()
  do throws(VirtioError) {
    try VhostUserTransport.handshake(channel, state, deviceType: blk ? .block : .net, options: options, logger: quiet)
    require(state.config.count == (blk ? 60 : 12), "handshake left a \(state.config.count)-byte config")
  } catch {
    require(!error.message.isEmpty, "an error without a message")
  }
  return 0
}
