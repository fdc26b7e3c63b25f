import FuzzSupport

runFuzzer(netReceiveFuzz)
