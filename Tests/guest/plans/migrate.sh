# Live migration (issue 18): the guest moves to a second QEMU on this host
# (tools/guestbed/migration.py; stop-and-copy under TCG before QEMU 9.0,
# whose live moves lose guest writes, docs/TESTING.md; the host compares
# the guest's RAM on both sides) while vio-fwd forwards net1 -> net2 over VFIO
# and vio-fio writes with verification to blkhp (serial vio-hotplug,
# hotplug.img at 16 MiB+). The host's frames go before the move (p1) and
# after it (p2; the host handles the requests in order, so p2 starts once
# the move completed): the host checks every frame of both phases on net2 —
# intact, once, in flow order, or counted dropped. vio-fio runs one 1 MiB
# write+verify job after another across the move; the host verifies every
# block of each job that reported success in the image. After the move the
# device sets VIRTIO_NET_S_ANNOUNCE: vio-fwd's ports send gratuitous RARPs;
# the host counts them for each MAC (QEMU's own per announce round, plus
# the driver's, which vio-fwd reports in its JSON).

MA=$(fwd_dev 52:54:00:12:34:61)
MB=$(fwd_dev 52:54:00:12:34:62)
# the hot-plug disk; already on vfio-pci after the hot-unplug checks: the one they found
MK=$(blk_by_serial vio-hotplug)
[ -n "$MK" ] || MK=${HK:-}
if [ -z "$MA" ] || [ -z "$MB" ] || [ -z "$MK" ]; then
  check_fail migrate-devices "net1 '$MA', net2 '$MB', blkhp '$MK': a function is missing"
else
  check_pass migrate-devices "net1 $MA, net2 $MB, blkhp $MK"
  for d in $MA $MB $MK; do bind_vfio $d || check_fail migrate-bind "$d: $(pci_driver $d)"; done
  fwd_start mig --port pci:$MA --port pci:$MB --mode io --wait hybrid
  hostreq net-traffic mig p1 '{"from":"net1","to":"net2","count":1500,"rate":1000,"flows":4,"jumbo":false}'
  wait_until 300 fwd_has_rx mig 1500 || check_fail migrate-net-before "vio-fwd received $(fwd_rx mig) of 1500 frames"
  hostreq net-traffic-wait mig p1
  rm -f /tmp/migfio.done
  ( i=0
    while [ $i -lt 10 ]; do
      off=$((16 + i))
      timeout 120 /bin/vio-fio --filename=pci:$MK --rw=write --bs=4k --offset=${off}m --size=1m --iodepth=4 \
        --verify=crc32c --end_fsync=1 >/tmp/migfio.$i.out 2>&1
      rc=$?
      if [ $rc -eq 0 ]; then echo $off >> /tmp/migfio.done; else
        echo "GUESTBED migfio job $i (offset ${off}m) exit $rc: $(grep -v -e '^ *|' -e '^ *vio:' /tmp/migfio.$i.out | tail -n4 | tr '\n' ' ')"; fi
      i=$((i + 1))
    done ) &
  FIOLOOP=$!
  wait_until 120 [ -s /tmp/migfio.done ] || check_fail migrate-fio-before "no vio-fio run finished before the move"
  hostreq migrate
  hostreq net-traffic mig p2 '{"from":"net1","to":"net2","count":1500,"rate":1000,"flows":4,"jumbo":false}'
  wait_until 300 fwd_has_rx mig 3000 || check_fail migrate-net-after "vio-fwd received $(fwd_rx mig) of 3000 frames"
  hostreq net-traffic-wait mig p2
  wait $FIOLOOP
  runs=$(wc -l < /tmp/migfio.done)
  if [ "$runs" -eq 10 ]; then
    check_pass migrate-fio "10 write+verify jobs across the move, each exit 0"
  else
    check_fail migrate-fio "$runs of 10 vio-fio jobs succeeded (GUESTBED migfio lines above say why)"
  fi
  for off in $(cat /tmp/migfio.done); do hostcheck hotplug-verify $((off * 1048576)) 1048576 4096; done
  # Announcements: QEMU raises VIRTIO_NET_S_ANNOUNCE for a few rounds after the move.
  wait_until 60 grep -q "asks to be announced" /tmp/mig.log || check_fail migrate-announce-event "vio-fwd reported no announce request"
  fwd_stop mig
  a0=$(grep -o '"announcements":[0-9]*' /tmp/mig.json | sed -n 1p | cut -d: -f2)
  a1=$(grep -o '"announcements":[0-9]*' /tmp/mig.json | sed -n 2p | cut -d: -f2)
  hostcheck migrate-announce net1 52:54:00:12:34:61 ${a0:-0}
  hostcheck migrate-announce net2 52:54:00:12:34:62 ${a1:-0}
  for d in $MA $MB; do bind_kernel $d || check_fail migrate-handback "$d stays on $(pci_driver $d)"; done
fi
