# Automatic fallback, legacy-only device (issue 6; a plan fragment run by the
# default plan in vIOMMU boots with one queue pair; see tools/guestbed/fwdtest.py).
#
# net3 (MAC ...:63) is a legacy-only virtio-net device (disable-modern=on): no
# virtio 1.x interface, so VIRTIO_F_VERSION_1 cannot be negotiated. It is bound
# to vfio-pci first, like a device a user bound by mistake. vio-fwd forwards
# port A (net1, over VFIO) -> port B (pci:net3): PacketIO finds B legacy-only,
# hands it back to virtio-pci and opens its interface over AF_PACKET, says why,
# and the host checks that every frame it sent into net1 came out of net3.
# --no-fallback turns the same situation into an error (exit 1).

LA=$(fwd_dev 52:54:00:12:34:61)
LEG=$(fwd_dev 52:54:00:12:34:63)
if [ -z "$LA" ] || [ -z "$LEG" ]; then
  check_fail fallback-legacy-devices "no virtio-net functions with MACs ...:61 / ...:63 (got '$LA' '$LEG')"
else
  check_pass fallback-legacy-devices "port A $LA (net1, modern), port B $LEG (net3, legacy-only, device id $(cat /sys/bus/pci/devices/$LEG/device))"
  bind_vfio $LA && bind_vfio $LEG || check_fail fallback-legacy-bind "$LA: $(pci_driver $LA), $LEG: $(pci_driver $LEG)"

  # Forbidden fallback: a clear error naming the cause, exit 1, nothing forwarded.
  _out=$(timeout 120 /bin/vio-fwd --port pci:$LEG --no-fallback --duration 1 2>&1 >/dev/null)
  _rc=$?
  if [ $_rc -eq 1 ] && echo "$_out" | grep -q "legacy-only"; then
    check_pass fallback-legacy-forbidden "$(echo "$_out" | grep -m1 'legacy-only')"
  else
    check_fail fallback-legacy-forbidden "vio-fwd --no-fallback exit $_rc (want 1 and 'legacy-only'): $(echo "$_out" | tail -n2 | tr '\n' ' ')"
  fi

  fwd_start fallback-legacy --port pci:$LA --port pci:$LEG --mode io --wait hybrid
  if grep -q "port 1 pci:$LEG: kernel path .* because device lacks a required feature: .*legacy-only" /tmp/fallback-legacy.log; then
    check_pass fallback-legacy-reason "$(grep -m1 'port 1 pci:' /tmp/fallback-legacy.log)"
  else
    check_fail fallback-legacy-reason "vio-fwd did not say why port 1 is on the kernel path: $(head -n5 /tmp/fallback-legacy.log | tr '\n' ' ')"
  fi
  [ "$(pci_driver $LEG)" = virtio-pci ] && check_pass fallback-legacy-handback "$LEG is on virtio-pci: $(ls /sys/bus/pci/devices/$LEG/virtio*/net/)" \
    || check_fail fallback-legacy-handback "$LEG is on $(pci_driver $LEG), want virtio-pci"
  [ "$(pci_driver $LA)" = vfio-pci ] && check_pass fallback-legacy-port-a-vfio "port A stays on the userspace path" \
    || check_fail fallback-legacy-port-a-vfio "$LA is on $(pci_driver $LA)"
  fwd_traffic fallback-legacy p1 net1 net3 1500 1000 4
  fwd_stop fallback-legacy
  if grep -q '"path":"kernel","mtu":[0-9]*,.*"fallback":{"interface":"[a-z0-9]*","because":"device lacks a required feature"' /tmp/fallback-legacy.json; then
    check_pass fallback-legacy-json "port B reported as path kernel with its fallback reason"
  else
    check_fail fallback-legacy-json "--json has no fallback for port B: $(head -c 400 /tmp/fallback-legacy.json)"
  fi
  bind_kernel $LA || check_fail fallback-legacy-restore "$LA: $(pci_driver $LA)"
fi
