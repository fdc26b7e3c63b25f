# Surprise removal (issue 18): QMP device_del of functions held through VFIO,
# then device_add and a fresh bind. The functions sit on hotplug-capable PCIe
# root ports (tools/guestbed/hotplug.py): nethp (MAC ...:64) and blkhp
# (serial vio-hotplug). Net: vio-fwd forwards net1 -> net2 (ports 0, 1) and
# holds nethp as port 2; nethp is removed while the host's frames flow; the
# guest's removal must complete (the function leaves sysfs, QEMU sends
# DEVICE_DELETED), vio-fwd reports port 2 removed and keeps forwarding — the
# host checks every frame on net2 (intact, once, in flow order, or counted
# dropped). Blk: vio-fio writes to blkhp; its removal ends the run with a
# clear error and exit 1. Then each function is re-added, bound with vio-bind
# and used for a short run the host checks (frames, verified blocks).
# No sleeps for luck: every wait is for a condition, with a generous bound.

hp_gone() { [ ! -e /sys/bus/pci/devices/$1 ]; }
hp_net() { fwd_dev 52:54:00:12:34:64; }
hp_blk() { blk_by_serial vio-hotplug; }
hp_has_net() { [ -n "$(hp_net)" ]; }
hp_has_blk() { [ -n "$(hp_blk)" ]; }

HA=$(fwd_dev 52:54:00:12:34:61)
HB=$(fwd_dev 52:54:00:12:34:62)
HN=$(hp_net)
HK=$(hp_blk)
if [ -z "$HA" ] || [ -z "$HB" ] || [ -z "$HN" ] || [ -z "$HK" ]; then
  check_fail hotplug-devices "net1 '$HA', net2 '$HB', nethp '$HN', blkhp '$HK': a function is missing"
else
  check_pass hotplug-devices "net1 $HA, net2 $HB, nethp $HN (hotplug slot), blkhp $HK (hotplug slot)"
  for d in $HA $HB $HN $HK; do bind_vfio $d || check_fail hotplug-bind "$d: $(pci_driver $d)"; done

  # --- net: remove port 2 while ports 0 -> 1 forward ---------------------------
  fwd_start hpfwd --port pci:$HA --port pci:$HB --port pci:$HN --mode io --wait hybrid
  hostreq net-traffic hpfwd p1 '{"from":"net1","to":"net2","count":6000,"rate":1000,"flows":4,"jumbo":false}'
  wait_until 120 fwd_has_rx hpfwd 100 || check_fail hotplug-net-flowing "vio-fwd received $(fwd_rx hpfwd) frames before the removal"
  hostreq qmp device_del '{"id":"nethp"}'
  if wait_until 120 hp_gone $HN; then
    check_pass hotplug-net-removed "$HN left the guest while vio-fwd held it"
  else
    check_fail hotplug-net-removed "$HN still present 120 s after device_del: $(dmesg | grep -i -e vfio -e pciehp | tail -n3 | tr '\n' ' ')"
  fi
  hostreq hotplug-wait-deleted nethp
  if wait_until 60 grep -q "port 2: the device was removed" /tmp/hpfwd.log; then
    check_pass hotplug-net-reported "$(grep -m1 'port 2: the device was removed' /tmp/hpfwd.log | cut -c1-200)"
  else
    check_fail hotplug-net-reported "vio-fwd did not report port 2 removed: $(tail -n3 /tmp/hpfwd.log | tr '\n' ' ')"
  fi
  wait_until 300 fwd_has_rx hpfwd 6000 || check_fail hotplug-net-received "vio-fwd received $(fwd_rx hpfwd) of 6000 frames"
  hostreq net-traffic-wait hpfwd p1
  # After the removal: forwarding on the other ports goes on.
  hostreq net-traffic hpfwd p2 '{"from":"net1","to":"net2","count":1000,"rate":1000,"flows":4,"jumbo":false}'
  wait_until 300 fwd_has_rx hpfwd 7000 || check_fail hotplug-net-after "vio-fwd received $(fwd_rx hpfwd) of 7000 frames"
  hostreq net-traffic-wait hpfwd p2
  fwd_stop hpfwd
  grep -q '"removed":true' /tmp/hpfwd.json && check_pass hotplug-net-summary "the JSON summary marks port 2 removed" \
    || check_fail hotplug-net-summary "no \"removed\":true in vio-fwd's summary"

  # --- net: re-add, bind again, a short run ----------------------------------
  hostreq hotplug-add nethp
  if wait_until 120 hp_has_net; then
    HN=$(hp_net)
    out=$(vio-bind bind $HN 2>&1); rc=$?
    if [ $rc -eq 0 ] && [ "$(pci_driver $HN)" = vfio-pci ]; then check_pass hotplug-net-rebind "$HN: $(echo "$out" | tail -n1)"; else check_fail hotplug-net-rebind "rc $rc: $out"; fi
    timeout 120 /bin/vio-fwd --port pci:$HN --mode txonly --duration 3 --json >/tmp/hptx.json 2>/tmp/hptx.log
    rc=$?
    if [ $rc -eq 0 ]; then check_pass hotplug-net-rerun "$(grep 'total:' /tmp/hptx.log)"; else check_fail hotplug-net-rerun "exit $rc: $(tail -n3 /tmp/hptx.log | tr '\n' ' ')"; fi
    hostcheck hotplug-frames 100
  else
    check_fail hotplug-net-readded "no function with MAC 52:54:00:12:34:64 after device_add"
  fi

  # --- blk: remove the function under vio-fio --------------------------------
  timeout 300 /bin/vio-fio --filename=pci:$HK --rw=randwrite --bs=4k --size=8m --iodepth=8 --runtime=240 --time_based \
    --interrupts --eta=always >/tmp/hpfio.out 2>&1 &
  FIO=$!
  wait_until 120 grep -q "Jobs:" /tmp/hpfio.out || check_fail hotplug-blk-running "vio-fio did not start: $(tail -c 300 /tmp/hpfio.out)"
  hostreq qmp device_del '{"id":"blkhp"}'
  wait $FIO
  rc=$?
  if [ $rc -eq 1 ] && grep -q "removed" /tmp/hpfio.out; then
    check_pass hotplug-blk-error "exit 1: $(grep -m1 'removed' /tmp/hpfio.out | cut -c1-220)"
  else
    check_fail hotplug-blk-error "vio-fio exit $rc (want 1, the device removed): $(tr '\r' '\n' </tmp/hpfio.out | tail -n4 | tr '\n' ' ')"
  fi
  if wait_until 120 hp_gone $HK; then check_pass hotplug-blk-removed "$HK left the guest"; else check_fail hotplug-blk-removed "$HK still present: $(dmesg | grep -i -e vfio -e pciehp | tail -n3 | tr '\n' ' ')"; fi
  hostreq hotplug-wait-deleted blkhp

  # --- blk: re-add, bind again, write and verify ------------------------------
  hostreq hotplug-add blkhp
  if wait_until 120 hp_has_blk; then
    HK=$(hp_blk)
    out=$(vio-bind bind $HK 2>&1); rc=$?
    if [ $rc -eq 0 ] && [ "$(pci_driver $HK)" = vfio-pci ]; then check_pass hotplug-blk-rebind "$HK: $(echo "$out" | tail -n1)"; else check_fail hotplug-blk-rebind "rc $rc: $out"; fi
    timeout 120 /bin/vio-fio --filename=pci:$HK --rw=write --bs=4k --offset=8m --size=1m --iodepth=8 --verify=crc32c --end_fsync=1 \
      >/tmp/hpfio2.out 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then check_pass hotplug-blk-rerun "$(grep -m1 'write:' /tmp/hpfio2.out)"; else check_fail hotplug-blk-rerun "exit $rc: $(tail -n4 /tmp/hpfio2.out | tr '\n' ' ')"; fi
    hostcheck hotplug-verify 8388608 1048576 4096
  else
    check_fail hotplug-blk-readded "no function with serial vio-hotplug after device_add"
  fi
  for d in $HA $HB; do bind_kernel $d || check_fail hotplug-handback "$d stays on $(pci_driver $d)"; done
fi
