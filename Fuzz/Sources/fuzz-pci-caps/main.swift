import FuzzSupport

runFuzzer(pciCapsFuzz)
