# vio-bind's safety checks (issue 6), on the scratch disk (serial vio-scratch)
# and the net device: a mounted filesystem and the interface carrying the
# default route are refused; --force proceeds; restore brings them back.
# Runs after the other programs: it leaves the scratch disk formatted.
bind_safety() {
  local net=$1 scratch="" dev="" out
  for d in $(find_virtio 0x1042); do
    for b in /sys/bus/pci/devices/$d/virtio*/block/*; do
      [ -e "$b" ] || continue
      [ "$(cat $b/serial 2>/dev/null)" = vio-scratch ] && { scratch=$d; dev=$(basename $b); }
    done
  done
  if [ -z "$scratch" ]; then check_fail bind-scratch-disk "no virtio-blk function with serial vio-scratch"; return; fi
  mkdir -p /mnt/scratch
  if ! mke2fs -q /dev/$dev >/dev/null 2>&1 || ! mount -t ext2 /dev/$dev /mnt/scratch; then
    check_fail bind-scratch-mount "could not make and mount an ext2 filesystem on /dev/$dev"
    return
  fi
  # vio-bind check BDF (issue 13: it was refused as an unexpected argument): that
  # function's lines, read-only, its in-use state named; exit 0 or 1 (machine FAILUREs).
  out=$(vio-bind check $scratch 2>&1); rc=$?
  if [ $rc -le 1 ] && echo "$out" | grep -q "function $scratch: virtio function" \
    && echo "$out" | grep -q "function $scratch use: in use: .*mounted: /dev/$dev on /mnt/scratch"; then
    check_pass bind-check-function "$(echo "$out" | grep "function $scratch" | tr '\n' ' ' | cut -c1-240)"
  else
    check_fail bind-check-function "rc $rc: $(echo "$out" | tail -n4 | tr '\n' ' ')"
  fi
  [ "$(pci_driver $scratch)" = virtio-pci ] || check_fail bind-check-untouched "driver now $(pci_driver $scratch)"
  out=$(vio-bind bind $scratch 2>&1); rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -q "mounted: /dev/$dev on /mnt/scratch" && echo "$out" | grep -q -- "--force"; then
    check_pass bind-refuses-mounted "$(echo "$out" | head -n1)"
  else
    check_fail bind-refuses-mounted "rc $rc: $out"
  fi
  [ "$(pci_driver $scratch)" = virtio-pci ] || check_fail bind-refused-untouched "driver now $(pci_driver $scratch)"
  out=$(vio-bind bind --force $scratch 2>&1); rc=$?
  if [ $rc -eq 0 ] && [ "$(pci_driver $scratch)" = vfio-pci ]; then check_pass bind-force-blk "$out"; else check_fail bind-force-blk "rc $rc: $out"; fi
  umount -l /mnt/scratch 2>/dev/null
  out=$(vio-bind restore $scratch 2>&1); rc=$?
  if [ $rc -eq 0 ] && [ "$(pci_driver $scratch)" = virtio-pci ] && ls /sys/bus/pci/devices/$scratch/virtio*/block/* >/dev/null 2>&1; then
    check_pass restore-blk "$out"
  else
    check_fail restore-blk "rc $rc: $out"
  fi

  local ifname
  ifname=$(ls /sys/bus/pci/devices/$net/virtio*/net/ 2>/dev/null | head -n1)
  if [ -z "$ifname" ]; then check_fail bind-net-interface "$net has no kernel interface"; return; fi
  ip link set "$ifname" up && ip addr add 10.99.0.15/24 dev "$ifname" && ip route add default via 10.99.0.1 dev "$ifname"
  out=$(vio-bind bind $net 2>&1); rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -q "default route via $ifname"; then
    check_pass bind-refuses-default-route "$(echo "$out" | head -n1)"
  else
    check_fail bind-refuses-default-route "rc $rc: $out"
  fi
  out=$(vio-bind bind --force $net 2>&1); rc=$?
  if [ $rc -eq 0 ] && [ "$(pci_driver $net)" = vfio-pci ]; then check_pass bind-force-net "$out"; else check_fail bind-force-net "rc $rc: $out"; fi
  out=$(vio-bind restore $net 2>&1); rc=$?
  if [ $rc -eq 0 ] && [ -n "$(ls /sys/bus/pci/devices/$net/virtio*/net/ 2>/dev/null)" ]; then
    check_pass restore-net "$out"
  else
    check_fail restore-net "rc $rc: $out"
  fi
}
NET=${NET:-$(find_virtio 0x1041 | head -n1)}
bind_safety "$NET"
