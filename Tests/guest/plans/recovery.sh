# Fault recovery (issue 18), run by the default plan after blk.sh (which
# leaves the drives on virtio_blk): kill -9 mid-run then a fresh run on the
# same functions, and DEVICE_NEEDS_RESET raised by QEMU itself and recovered
# in-process.
# Expects $BLK (blk0, disk.img) and blk.sh's helpers (fio_run, expect).
#
# vio-fio writes 44-60 MiB of disk.img with a flush after every write
# (--fsync=1 at queue depth 1: a flush after every write, so the run lasts
# seconds however fast the machine, long enough for the first live line);
# its live line says how many bytes a completed flush made durable. It is killed with -9 once that is above zero; the host then
# verifies exactly that many bytes from 44 MiB in the image (after poweroff:
# a flushed write survives whatever follows). A fresh vio-fio on the same
# function must open it (VFIO resets the function the dead process left
# mid-I/O) and write + verify 60-62 MiB. The same for vio-fwd: killed while
# forwarding, a fresh vio-fwd opens both ports and forwards a burst the host
# checks frame by frame.

bind_vfio $BLK || check_fail kill-bind-vfio "$BLK is bound to $(pci_driver $BLK), not vfio-pci"
rm -f /tmp/blk-kill.out
timeout 300 /bin/vio-fio --filename=pci:$BLK --rw=write --bs=4k --offset=44m --size=16m --iodepth=1 --fsync=1 \
  --verify=crc32c --do_verify=0 --eta=always > /tmp/blk-kill.out 2>&1 &
fio_pid=$!
flushed_now() { tr '\r' '\n' < /tmp/blk-kill.out | sed -n 's/.*\[flushed [0-9]* ios \([0-9]*\) bytes\].*/\1/p' | tail -n1; }
has_flushed() { [ "$(flushed_now)" -gt 0 ] 2>/dev/null; }
wait_until 120 has_flushed
kill -9 $fio_pid 2>/dev/null
wait $fio_pid
rc=$?
tr '\r' '\n' < /tmp/blk-kill.out | grep -E "Jobs:" | tail -n 1
flushed=$(flushed_now)
if [ $rc -eq 137 ] && [ "${flushed:-0}" -gt 0 ] && [ "$flushed" -lt $((16 * MIB)) ]; then
  check_pass blk-kill9-fio "vio-fio killed with -9 mid-run (exit $rc) after a flush covered $flushed bytes"
  hostcheck blk-verify $((44 * MIB)) $flushed 4096 killed-flushed
else
  check_fail blk-kill9-fio "vio-fio exit $rc, flushed ${flushed:-none} bytes (want exit 137 after a flush, before the end): $(tr '\r' '\n' < /tmp/blk-kill.out | tail -n 3 | tr '\n' ' ')"
fi
fio_run blk-fio-after-kill9 0 --filename=pci:$BLK --rw=write --bs=4k --offset=60m --size=2m --iodepth=8 --verify=crc32c &&
  expect blk-fio-after-kill9 "verify: 512 blocks ok, 0 bad"
hostcheck blk-verify $((60 * MIB)) $((2 * MIB)) 4096 after-kill9

# DEVICE_NEEDS_RESET from the real device (split rings): vio-fio's test-only
# knob publishes an impossible avail index after 300 completions; QEMU flags
# the queue broken and sets NEEDS_RESET (§2.1.2). The driver must see it,
# reset and set the device up again in-process, and — with --recover=resubmit
# — post the requests in flight again: every block of 28-32 MiB verifies
# (read back by vio-fio, and in the image by the host), with the restart and
# the resubmitted requests counted. With the default policy the requests in
# flight fail as device lost, counted, and vio-fio says why (exit 1); a fresh
# run after that works.
if [ "$GUESTBED_RING" = split ]; then
  fio_run blk-needs-reset-resubmit 0 --filename=pci:$BLK --rw=write --bs=4k --offset=28m --size=4m --iodepth=8 \
    --verify=crc32c --recover=resubmit --test-only-needs-reset-after=300 --log-level=warning &&
    expect blk-needs-reset-resubmit "verify: 1024 blocks ok, 0 bad" "device_restarts=1 " "lost=0" \
      "published an impossible avail index" "DEVICE_NEEDS_RESET" "the device is back after a reset"
  grep -E "NEEDS_RESET|device is back|restarts=" /tmp/blk-needs-reset-resubmit.out | head -n 4
  hostcheck blk-verify $((28 * MIB)) $((4 * MIB)) 4096 needs-reset-resubmit
  fio_run blk-needs-reset-fail 1 --filename=pci:$BLK --rw=write --bs=4k --offset=14m --size=2m --iodepth=8 \
    --verify=crc32c --test-only-needs-reset-after=100 &&
    expect blk-needs-reset-fail "device_restarts=1 " "failed as device lost" "run with --recover=resubmit"
  lost=$(vio_field blk-needs-reset-fail 0 lost)
  [ "${lost:-0}" -gt 0 ] && check_pass blk-needs-reset-lost-counted "$lost request(s) lost, each counted and reported" ||
    check_fail blk-needs-reset-lost-counted "lost=${lost:-none}"
  fio_run blk-fio-after-needs-reset 0 --filename=pci:$BLK --rw=write --bs=4k --offset=16m --size=1m --iodepth=8 --verify=crc32c &&
    expect blk-fio-after-needs-reset "verify: 256 blocks ok, 0 bad"
  hostcheck blk-verify $((16 * MIB)) $MIB 4096 after-needs-reset
fi
bind_kernel $BLK || check_fail kill-handback "$BLK stays on $(pci_driver $BLK)"

KA=$(fwd_dev 52:54:00:12:34:61)
KB=$(fwd_dev 52:54:00:12:34:62)
if [ -x /bin/vio-fwd ] && [ -n "$KA" ] && [ -n "$KB" ] && bind_vfio $KA && bind_vfio $KB; then
  rm -f /tmp/fwd-kill.log
  /bin/vio-fwd --port pci:$KA --port pci:$KB --mode io --stats-period 0 >/dev/null 2>/tmp/fwd-kill.log &
  fwd_pid=$!
  wait_until 120 grep -q "forwarding:" /tmp/fwd-kill.log
  kill -9 $fwd_pid 2>/dev/null
  wait $fwd_pid
  rc=$?
  if [ $rc -eq 137 ] && grep -q "forwarding:" /tmp/fwd-kill.log; then
    check_pass net-kill9-fwd "vio-fwd killed with -9 while forwarding"
  else
    check_fail net-kill9-fwd "vio-fwd exit $rc: $(tail -n 3 /tmp/fwd-kill.log | tr '\n' ' ')"
  fi
  # A fresh run on the same two functions forwards a burst the host checks.
  rm -f /tmp/fwdk.stats /tmp/fwdk.json /tmp/fwdk.log
  /bin/vio-fwd --port pci:$KA --port pci:$KB --mode io --stats-period 1 --stats-file /tmp/fwdk.stats --json \
    >/tmp/fwdk.json 2>/tmp/fwdk.log &
  FWD=$!
  if wait_until 120 grep -q "forwarding:" /tmp/fwdk.log; then
    hostreq net-traffic fwdk p1 '{"from":"net1","to":"net2","count":600,"rate":1500,"flows":4,"jumbo":true}'
    fwdk_got() { _v=$(sed -n 's/^port0.rx_packets=//p' /tmp/fwdk.stats 2>/dev/null); [ "${_v:-0}" -ge 600 ]; }
    wait_until 300 fwdk_got || check_fail net-fwd-after-kill9-received "vio-fwd received $(sed -n 's/^port0.rx_packets=//p' /tmp/fwdk.stats) of 600 frames"
    hostreq net-traffic-wait fwdk p1
  else
    check_fail net-fwd-after-kill9 "the fresh vio-fwd did not start: $(tail -n 3 /tmp/fwdk.log | tr '\n' ' ')"
  fi
  kill -INT $FWD
  wait $FWD
  rc=$?
  [ $rc -eq 0 ] && check_pass net-fwd-after-kill9 "$(grep 'total:' /tmp/fwdk.log)" ||
    check_fail net-fwd-after-kill9 "vio-fwd exit status $rc: $(tail -n 3 /tmp/fwdk.log | tr '\n' ' ')"
  echo "VIOFWD-JSON fwdk $(cat /tmp/fwdk.json)"
  hostcheck net-traffic fwdk
  bind_kernel $KA && bind_kernel $KB || check_fail kill-fwd-handback "$KA: $(pci_driver $KA), $KB: $(pci_driver $KB)"
else
  check_fail net-kill9-fwd "no vio-fwd or no net1/net2 functions on vfio-pci ('$KA' '$KB')"
fi
