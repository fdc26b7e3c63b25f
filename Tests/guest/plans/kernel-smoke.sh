# Test-bed self-test plan (a plan body; see tools/guestbed/plan.py).
# Exercises every path of the harness with the guest kernel's own virtio
# drivers and busybox only, so it needs no project binary:
#
#   tools/guest-test --no-build --plan Tests/guest/plans/kernel-smoke.sh
#
# guest -> host frames (HOSTCHECK net-rx), host -> guest frames (HOSTREQ
# net-send), QMP from the guest (HOSTREQ qmp set_link), disk image reads of
# the initial pattern and writes the host verifies (HOSTCHECK blk-data,
# blk-pattern), and binding to vfio-pci and back.

NET=$(find_virtio 0x1041 | head -n1)
BLK=$(find_virtio 0x1042 | head -n1)
[ -n "$NET" ] && [ -n "$BLK" ] && check_pass smoke-devices \
  || check_fail smoke-devices "net=$NET blk=$BLK"
[ "$(pci_driver $NET)" = virtio-pci ] && [ "$(pci_driver $BLK)" = virtio-pci ] \
  && check_pass smoke-kernel-drivers \
  || check_fail smoke-kernel-drivers "net $(pci_driver $NET), blk $(pci_driver $BLK)"

# --- the variant's device properties, as the kernel's drivers negotiated them
# (bits: 28 INDIRECT_DESC, 29 EVENT_IDX, 34 RING_PACKED; queue counts are
# capped at the number of CPUs by the kernel's drivers)
want() { [ "$1" = "$2" ] && echo 1 || echo 0; }
bad=""
for d in $NET $BLK; do
  for fb in "packed 34 $(want "$GUESTBED_RING" packed)" \
            "event_idx 29 $(want "$GUESTBED_EVENT_IDX" on)" \
            "indirect 28 $(want "$GUESTBED_INDIRECT" on)"; do
    set -- $fb
    has_feature $d $2 && got=1 || got=0
    [ "$got" = "$3" ] || bad="$bad $d:$1=$got"
  done
done
cpus=$(nproc)
capped() { [ "$1" -lt "$cpus" ] && echo "$1" || echo "$cpus"; }
IF=$(ls /sys/bus/pci/devices/$NET/virtio*/net/ 2>/dev/null | head -n1)
DEV=$(ls /sys/bus/pci/devices/$BLK/virtio*/block/ | head -n1)
nq=$(ls -d /sys/class/net/$IF/queues/rx-* | wc -l)
bq=$(ls -d /sys/block/$DEV/mq/* | wc -l)
[ "$nq" = "$(capped $GUESTBED_NET_QUEUES)" ] || bad="$bad net-queues=$nq"
[ "$bq" = "$(capped $GUESTBED_BLK_QUEUES)" ] || bad="$bad blk-queues=$bq"
[ -z "$bad" ] && check_pass smoke-variant-properties \
  || check_fail smoke-variant-properties "not as $GUESTBED_VARIANT asks:$bad"

# --- net: guest -> host. udhcpc sends a DHCPDISCOVER whose hostname option
# carries a marker; the host looks for the marker in the frames it got.
ip link set "$IF" up
marker="gb-tx-$(cut -c1-8 /proc/sys/kernel/random/uuid)"
udhcpc -i "$IF" -n -q -t 1 -T 1 -s /bin/true -x "hostname:$marker" >/dev/null 2>&1
hostcheck net-rx "$(hexof "$marker")" dhcp

# --- net: host -> guest. Ask the host for 3 frames of a local ethertype.
mac=$(tr -d ':' < /sys/class/net/$IF/address)
rx0=$(cat /sys/class/net/$IF/statistics/rx_packets)
hostreq net-send "${mac}525400abcdef88b5$(hexof guestbed-host-to-guest)0000000000000000000000000000" 3
rx_grew() { [ $(cat /sys/class/net/$IF/statistics/rx_packets) -ge $((rx0 + 3)) ]; }
wait_until 60 rx_grew && check_pass smoke-net-host-to-guest \
  || check_fail smoke-net-host-to-guest "rx_packets $rx0 -> $(cat /sys/class/net/$IF/statistics/rx_packets), expected +3"

# --- QMP from the guest: link down and up again, seen as carrier changes.
hostreq qmp set_link '{"name":"net0","up":false}'
carrier() { [ "$(cat /sys/class/net/$IF/carrier 2>/dev/null)" = "$1" ]; }
wait_until 60 carrier 0 && check_pass smoke-qmp-link-down || check_fail smoke-qmp-link-down "carrier stayed up"
hostreq qmp set_link '{"name":"net0","up":true}'
wait_until 60 carrier 1 && check_pass smoke-qmp-link-up || check_fail smoke-qmp-link-up "carrier stayed down"

# --- blk: the image's initial pattern, then a write the host verifies.
got=$(dd if=/dev/$DEV bs=512 skip=5 count=1 2>/dev/null | head -c 16 | hexdump -v -e '/1 "%02x"')
[ "$got" = "$(hexof GUESTBED)0500000000000000" ] && check_pass smoke-blk-read-pattern \
  || check_fail smoke-blk-read-pattern "sector 5 starts with $got"
data="gb-blk-$(cut -c1-8 /proc/sys/kernel/random/uuid)"
printf '%s' "$data" | dd of=/dev/$DEV bs=512 seek=100 conv=notrunc,fsync 2>/dev/null
sync
hostcheck blk-data $((100 * 512)) "$(hexof "$data")" write
hostcheck blk-pattern 0 100 untouched

# --- binding: to vfio-pci and back to the kernel's virtio-pci.
bind_vfio $NET && [ -c /dev/vfio/$(iommu_group $NET) ] && check_pass smoke-bind-vfio \
  || check_fail smoke-bind-vfio "driver $(pci_driver $NET)"
bind_kernel $NET && [ -n "$(ls /sys/bus/pci/devices/$NET/virtio*/net/ 2>/dev/null)" ] \
  && check_pass smoke-bind-kernel || check_fail smoke-bind-kernel "driver $(pci_driver $NET)"
