import FuzzSupport

runFuzzer(vhostReplyFuzz)
