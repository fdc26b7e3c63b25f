import FuzzSupport

runFuzzer(tcpSegmentFuzz)
