/// BlockIO's errors are the driver stack's one error type, as in PacketIO: a
/// code to switch on, the errno when a system call failed, and a sentence
/// that says what happened and what to do. The data path never throws:
/// submissions return a `BlockSubmitResult`, completions carry a `BlockIOStatus`.
@available(*, deprecated, renamed: "VirtioError")
public typealias BlockIOError = VirtioError
