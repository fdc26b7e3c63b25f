# Test-bed self-test plan: never ends (the harness must time out).
sleep 100000
