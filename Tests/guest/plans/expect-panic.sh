# Test-bed self-test plan: panics the guest kernel (the harness must say so).
echo c > /proc/sysrq-trigger
