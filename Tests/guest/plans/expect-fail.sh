# Test-bed self-test plan that must FAIL, in these known ways (Tests/guest/selftest
# checks the harness reports each one): an explicit CHECK FAIL, a crashing
# program, a host check that cannot hold, an unknown host request, and an
# early exit (no PLAN DONE).
check_pass neg-before
check_fail neg-explicit "on purpose"
run_program neg-crash sh -c 'kill -SEGV $$'
hostcheck net-rx deadbeefcafe never
hostcheck blk-data 0 00112233 wrong
hostreq bogus 1
exit 3
