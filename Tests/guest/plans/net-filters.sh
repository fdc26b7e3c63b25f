# MAC/VLAN receive filters on QEMU's real virtio-net (issue 15; run by the
# default plan in the plain split boot, whose net1/net2 are stream netdevs:
# frames keep their 802.1Q tags end to end and arrive in order).
# vio-fwd forwards net1 -> net2 over VFIO with promiscuous mode off, its own
# MAC set (CTRL_MAC_ADDR_SET), a MAC table of one unicast and one multicast
# address (CTRL_MAC_TABLE_SET) and VLAN 5 (CTRL_VLAN_ADD). The host sends
# eight flows, each to its own destination: the set MAC, the listed unicast
# and multicast, the set MAC in VLAN 5 — these must arrive — and the device's
# old MAC, an unlisted multicast, the set MAC in VLAN 7 and the listed MAC in
# VLAN 7 — these the device must drop (QEMU's receive_filter): none reaches
# net2 and vio-fwd's port A counts only the others (HOSTCHECK net-filter).
# Then the hidden --test-only-clear-filters-after clears the filters at run
# time through PortGroup's setters (promiscuous on, table emptied, VLAN 5
# removed) and the same eight flows must all arrive.
# Every cycle of eight frames ends with one that passes, so when vio-fwd has
# received the last of phase f1 the device has already judged every frame
# before it: the clearing cannot let an f1 frame through.
FLA=$(fwd_dev 52:54:00:12:34:61)
FLB=$(fwd_dev 52:54:00:12:34:62)
if [ -n "$FLA" ] && [ -n "$FLB" ] && bind_vfio $FLA && bind_vfio $FLB; then
  OWN=02:00:00:00:0a:0a
  UNI=02:00:00:00:0b:02
  MULTI=01:00:5e:00:00:fb
  fwd_start net-filter --port pci:$FLA --port pci:$FLB --mode io --wait hybrid \
    --mac $OWN --mac-filter $UNI,$MULTI --vlan-filter 5 --test-only-clear-filters-after=200
  # Both ports report the MAC they set (CTRL_MAC_ADDR_SET), not the device's first one.
  if [ "$(grep -m1 'forwarding:' /tmp/net-filter.log | grep -o "mac $OWN" | wc -l)" -eq 2 ]; then
    check_pass net-filter-mac "both ports: mac $OWN"
  else
    check_fail net-filter-mac "vio-fwd does not report mac $OWN on both ports: $(grep -m1 'forwarding:' /tmp/net-filter.log | grep -o 'mac [0-9a-f:]*' | tr '\n' ' ')"
  fi
  # filtered_targets <true|false>: the eight flows; "filtered" marks those the device must drop.
  filtered_targets() {
    echo "[{\"mac\":\"52:54:00:12:34:61\",\"filtered\":$1},{\"mac\":\"01:00:5e:00:00:fc\",\"filtered\":$1},"\
"{\"mac\":\"$OWN\",\"vlan\":7,\"filtered\":$1},{\"mac\":\"$UNI\",\"vlan\":7,\"filtered\":$1},"\
"{\"mac\":\"$OWN\"},{\"mac\":\"$UNI\"},{\"mac\":\"$MULTI\"},{\"mac\":\"$OWN\",\"vlan\":5}]"
  }
  # 400 frames, 50 per flow: 200 pass the filters.
  hostreq net-traffic net-filter f1 "{\"from\":\"net1\",\"to\":\"net2\",\"count\":400,\"rate\":400,\"targets\":$(filtered_targets true)}"
  wait_until 120 fwd_has_rx net-filter 200 || check_fail net-filter-received "vio-fwd received $(fwd_rx net-filter) of the 200 frames that pass"
  hostreq net-traffic-wait net-filter f1
  if wait_until 60 grep -q "receive filters cleared" /tmp/net-filter.log; then
    check_pass net-filter-cleared "$(grep -m1 'receive filters cleared' /tmp/net-filter.log | cut -c1-200)"
  else
    check_fail net-filter-cleared "vio-fwd did not clear its filters: $(tail -n3 /tmp/net-filter.log | tr '\n' ' ')"
  fi
  hostreq net-traffic net-filter f2 "{\"from\":\"net1\",\"to\":\"net2\",\"count\":400,\"rate\":400,\"targets\":$(filtered_targets false)}"
  wait_until 120 fwd_has_rx net-filter 600 || check_fail net-filter-received-cleared "vio-fwd received $(fwd_rx net-filter) of 600 frames"
  hostreq net-traffic-wait net-filter f2
  fwd_exit net-filter-exit /tmp/net-filter.log $FWD_PID
  echo "VIOFWD-JSON net-filter $(cat /tmp/net-filter.json)"
  hostcheck net-filter net-filter
  bind_kernel $FLA && bind_kernel $FLB || check_fail net-filter-handback "$FLA: $(pci_driver $FLA), $FLB: $(pci_driver $FLB)"
else
  check_fail net-filter-devices "no net1/net2 functions on vfio-pci ('$FLA' '$FLB')"
fi
