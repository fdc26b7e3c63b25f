import FuzzSupport

runFuzzer(verifyHeaderFuzz)
