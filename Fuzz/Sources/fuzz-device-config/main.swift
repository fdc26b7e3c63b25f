import FuzzSupport

runFuzzer(deviceConfigFuzz)
