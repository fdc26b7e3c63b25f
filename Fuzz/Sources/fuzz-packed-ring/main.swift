import FuzzSupport

runFuzzer(packedRingFuzz)
