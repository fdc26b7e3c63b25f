# DEVICE_NEEDS_RESET on a net port, raised by QEMU itself and recovered
# in-process (issue 18; run by the default plan in the plain split boot —
# a packed ring has no avail index to corrupt).
# vio-fwd forwards net1 -> net2 over VFIO with the hidden
# --test-only-needs-reset-after=1000: once port B (net2) has sent 1000 frames,
# its split TX ring publishes an impossible avail index; QEMU flags the queue
# and sets NEEDS_RESET (§2.1.2, VM-RECIPE "Fault scenarios"). The port must
# reset the device, set it up again and go on, reporting needs-reset, link
# down, recovered (with what it lost), link up. Phase p1 (3000 frames) spans
# the fault, phase p2 (1000) is sent after the recovery. The host checks every
# frame of both: intact, once, in flow order, each missing one counted by
# vio-fwd as dropped in its JSON (none silent) — and p2 complete.
RA=$(fwd_dev 52:54:00:12:34:61)
RB=$(fwd_dev 52:54:00:12:34:62)
if [ -n "$RA" ] && [ -n "$RB" ] && bind_vfio $RA && bind_vfio $RB; then
  fwd_start net-reset --port pci:$RA --port pci:$RB --mode io --wait hybrid --test-only-needs-reset-after=1000
  fwd_traffic net-reset p1 net1 net2 3000 1500 4
  if wait_until 60 grep -q "port 1: recovered from DEVICE_NEEDS_RESET" /tmp/net-reset.log &&
    wait_until 60 grep -q "port 1: link up" /tmp/net-reset.log; then
    check_pass net-reset-recovered "$(grep -m1 'port 1: recovered' /tmp/net-reset.log | cut -c1-300)"
  else
    check_fail net-reset-recovered "no recovery reported: $(grep -E 'test only|NEEDS_RESET|FAILED|error' /tmp/net-reset.log | head -n 4 | tr '\n' ' ')"
  fi
  # The events in order: needs-reset, link down, recovered, link up.
  order=$(grep -oE "port 1: (the device needs a reset|link down|recovered|link up)" /tmp/net-reset.log | sed 's/port 1: //' | tr '\n' '/')
  [ "$order" = "the device needs a reset/link down/recovered/link up/" ] && check_pass net-reset-events "$order" ||
    check_fail net-reset-events "events on port 1: '$order'"
  # fwd_traffic waits for the run's total: 3000 + 1000 frames received on port A.
  hostreq net-traffic net-reset p2 '{"from":"net1","to":"net2","count":1000,"rate":1500,"flows":4,"jumbo":false}'
  wait_until 300 fwd_has_rx net-reset 4000 || check_fail net-reset-received "vio-fwd received $(fwd_rx net-reset) of 4000 frames"
  hostreq net-traffic-wait net-reset p2
  fwd_stop net-reset
  grep -E "test only|NEEDS_RESET|recovered|port 1: link" /tmp/net-reset.log | head -n 8
  # vio-fwd's JSON: port 1 recovered once; what the reset lost is in its drops.
  if grep -q '"recoveries":1,"failed":false' /tmp/net-reset.json; then
    check_pass net-reset-json "$(grep -o '"dropped":[0-9]*' /tmp/net-reset.json | head -n1), recoveries 1"
  else
    check_fail net-reset-json "$(cut -c1-400 /tmp/net-reset.json)"
  fi
  hostcheck net-traffic-complete net-reset p2
  bind_kernel $RA && bind_kernel $RB || check_fail net-reset-handback "$RA: $(pci_driver $RA), $RB: $(pci_driver $RB)"
else
  check_fail net-reset-devices "no net1/net2 functions on vfio-pci ('$RA' '$RB')"
fi
