import FuzzSupport

runFuzzer(tpacketFuzz)
