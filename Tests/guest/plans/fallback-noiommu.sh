# Automatic fallback without a vIOMMU (issue 6): the whole plan of an
# `iommu=off` boot (tools/guestbed/variants.py). No IOMMU means no VFIO; every
# device stays on the kernel's virtio drivers, and the tools, given PCI
# addresses, must still work end to end on the kernel path and say why.
#
#   vio-bind:  `check` names the missing IOMMU; `bind` refuses.
#   vio-fwd:   pci:net1 -> pci:net2 on AF_PACKET; the host checks every frame
#              it sent into net1 came out of net2 (host-net-traffic-noiommu-fwd).
#   vio-fio:   pci:blk0 -> /dev/vdX on io_uring: write + verify, re-verify,
#              and the host checks the image (HOSTCHECK blk-verify).
#   --no-fallback: both tools fail with the reason (exit 1).

NA=$(fwd_dev 52:54:00:12:34:61)
NB=$(fwd_dev 52:54:00:12:34:62)
BLK=$(find_virtio 0x1042 | head -n1)
MIB=1048576
if [ -d /sys/class/iommu ] && [ -n "$(ls /sys/class/iommu 2>/dev/null)" ]; then
  check_fail noiommu-guest "the guest has an IOMMU ($(ls /sys/class/iommu)); this plan needs a boot without one"
else
  check_pass noiommu-guest "no IOMMU (/sys/kernel/iommu_groups has $(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l) groups)"
fi

# vio-bind: the preflight says what is missing; bind refuses (even --force).
_out=$(/bin/vio-bind check 2>&1); _rc=$?
if [ $_rc -ne 0 ] && echo "$_out" | grep -qi "iommu"; then
  check_pass noiommu-vio-bind-check "exit $_rc: $(echo "$_out" | grep -i -m1 iommu)"
else
  check_fail noiommu-vio-bind-check "vio-bind check exit $_rc: $(echo "$_out" | head -n4 | tr '\n' ' ')"
fi
_out=$(/bin/vio-bind bind --force $NA 2>&1); _rc=$?
if [ $_rc -ne 0 ] && [ "$(pci_driver $NA)" = virtio-pci ]; then
  check_pass noiommu-vio-bind-refused "exit $_rc: $(echo "$_out" | grep -i -m1 iommu)"
else
  check_fail noiommu-vio-bind-refused "vio-bind bind --force exit $_rc, $NA on $(pci_driver $NA): $(echo "$_out" | tail -n2 | tr '\n' ' ')"
fi

# vio-fwd, fallback forbidden: the reason, exit 1.
_out=$(timeout 120 /bin/vio-fwd --port pci:$NA --port pci:$NB --no-fallback --duration 1 2>&1 >/dev/null); _rc=$?
if [ $_rc -eq 1 ] && echo "$_out" | grep -q "no IOMMU"; then
  check_pass noiommu-fwd-forbidden "$(echo "$_out" | grep -m1 'no IOMMU' | cut -c1-200)"
else
  check_fail noiommu-fwd-forbidden "vio-fwd --no-fallback exit $_rc (want 1, 'no IOMMU'): $(echo "$_out" | tail -n2 | tr '\n' ' ')"
fi

# vio-fwd end to end on the kernel path.
fwd_start noiommu-fwd --port pci:$NA --port pci:$NB --mode io --wait hybrid
for p in 0 1; do
  if grep -q "port $p pci:.*: kernel path .* because no IOMMU: " /tmp/noiommu-fwd.log; then
    check_pass noiommu-fwd-reason-$p "$(grep -m1 "port $p pci:" /tmp/noiommu-fwd.log | cut -c1-240)"
  else
    check_fail noiommu-fwd-reason-$p "vio-fwd did not say why port $p is on the kernel path: $(head -n4 /tmp/noiommu-fwd.log | tr '\n' ' ')"
  fi
done
fwd_traffic noiommu-fwd p1 net1 net2 1500 1000 4
fwd_stop noiommu-fwd
_n=$(grep -o '"path":"kernel"[^{]*"fallback":{"interface":"[a-z0-9]*","because":"no IOMMU"' /tmp/noiommu-fwd.json | wc -l)
[ "$_n" -eq 2 ] && check_pass noiommu-fwd-json "both ports: path kernel, fallback because no IOMMU" \
  || check_fail noiommu-fwd-json "--json names $_n of 2 ports as fallen back: $(head -c 400 /tmp/noiommu-fwd.json)"

# vio-fio: fallback forbidden, then write + verify and re-verify on the kernel path.
_out=$(timeout 120 /bin/vio-fio --filename=pci:$BLK --rw=read --bs=4k --size=64k --no-fallback 2>&1); _rc=$?
if [ $_rc -eq 1 ] && echo "$_out" | grep -q "IOMMU"; then
  check_pass noiommu-fio-forbidden "$(echo "$_out" | grep -m1 'IOMMU' | cut -c1-200)"
else
  check_fail noiommu-fio-forbidden "vio-fio --no-fallback exit $_rc (want 1, IOMMU): $(echo "$_out" | tail -n2 | tr '\n' ' ')"
fi
timeout 300 /bin/vio-fio --filename=pci:$BLK --name=noiommu --rw=randwrite --bs=4k --size=2m --iodepth=16 \
  --verify=crc32c --end_fsync=1 >/tmp/nfio.out 2>&1
_rc=$?
if [ $_rc -eq 0 ] && grep -q "verify: 512 blocks ok, 0 bad" /tmp/nfio.out && grep -q "backend=kernel" /tmp/nfio.out \
  && grep -q "kernel path (/dev/vd[a-z]*) because no IOMMU" /tmp/nfio.out; then
  check_pass noiommu-fio-write-verify "$(grep -m1 'because no IOMMU' /tmp/nfio.out | cut -c1-160); $(grep -m1 'verify:' /tmp/nfio.out)"
else
  check_fail noiommu-fio-write-verify "exit $_rc: $(grep -v '^ *|' /tmp/nfio.out | tail -n 5 | tr '\n' ' ')"
fi
grep -E '^ *(write|vio|verify|Disk|Fallback)' /tmp/nfio.out | head -n 8
hostcheck blk-verify 0 $((2 * MIB)) 4096 noiommu
timeout 300 /bin/vio-fio --filename=pci:$BLK --rw=read --bs=4k --size=2m --iodepth=32 --verify=crc32c \
  --output-format=json >/tmp/nfio2.json 2>/tmp/nfio2.err
_rc=$?
if [ $_rc -eq 0 ] && grep -q '"backend": *"kernel"' /tmp/nfio2.json && grep -q '"because": *"no IOMMU"' /tmp/nfio2.json; then
  check_pass noiommu-fio-reverify-json "backend kernel, fallback because no IOMMU, re-verified"
else
  check_fail noiommu-fio-reverify-json "exit $_rc: $(tail -n3 /tmp/nfio2.err | tr '\n' ' ') $(grep -o '"backend"[^,]*' /tmp/nfio2.json | head -n1)"
fi
