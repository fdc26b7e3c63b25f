import FuzzSupport

runFuzzer(splitRingFuzz)
