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
# Then, opted in (issue 14), the userspace path without an IOMMU: over
# uio_pci_generic, then over VFIO's no-IOMMU mode (a rebuilt vfio.ko), then
# the kernel path, with figures side by side.

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

# ---- The no-IOMMU userspace path, opted into (issue 14) ----------------------
# Devices here offer no ACCESS_PLATFORM (boot.py), except the scratch disk,
# which the path must refuse. vio-bind binds to uio_pci_generic on request;
# vio-fwd and vio-fio take the devices with --allow-no-iommu (physical
# addresses, locked hugepages, polled queues). The host checks every frame
# (net-traffic) and the image region written (blk-verify); then the same
# devices on the kernel path, side by side (PERF lines, docs/PERFORMANCE.md).
SCR=""
for d in $(find_virtio 0x1042); do
  for b in /sys/bus/pci/devices/$d/virtio*/block/*; do
    [ "$(cat $b/serial 2>/dev/null)" = vio-scratch ] && SCR=$d
  done
done
[ -n "$SCR" ] || check_fail noiommu-uio-scratch "no virtio-blk function with serial vio-scratch"

# Opt-in missing: the kernel fallback above said the opt-in exists.
if grep -q -- "--allow-no-iommu" /tmp/noiommu-fwd.log && grep -q -- "--allow-no-iommu" /tmp/nfio.out; then
  check_pass noiommu-optin-named "$(grep -o 'or, accepting.*' /tmp/nfio.out | head -n1 | cut -c1-200)"
else
  check_fail noiommu-optin-named "the fallback reason does not name --allow-no-iommu: $(grep -m1 'because no IOMMU' /tmp/nfio.out | cut -c1-300)"
fi

_out=$(/bin/vio-bind bind --no-iommu $NA $NB $BLK $SCR 2>&1); _rc=$?
if [ $_rc -eq 0 ] && [ "$(pci_driver $NA)$(pci_driver $NB)$(pci_driver $BLK)$(pci_driver $SCR)" = \
  uio_pci_genericuio_pci_genericuio_pci_genericuio_pci_generic ] && echo "$_out" | grep -q "without an IOMMU"; then
  check_pass noiommu-uio-bind "$(echo "$_out" | tr '\n' ' ' | cut -c1-300)"
else
  check_fail noiommu-uio-bind "exit $_rc, drivers $(pci_driver $NA) $(pci_driver $NB) $(pci_driver $BLK) $(pci_driver $SCR): $(echo "$_out" | tail -n3 | tr '\n' ' ')"
fi

# uio_fail <check> <want-text> <vio-fio args...>: exit 1 and the text in the message.
# (FIO_PREFIX, when set, runs before vio-fio: e.g. setpriv)
uio_fail() {
  _c=$1 _w=$2; shift 2
  _out=$(timeout 120 ${FIO_PREFIX:-} /bin/vio-fio --rw=read --bs=4k --size=64k "$@" 2>&1); _rc=$?
  if [ $_rc -eq 1 ] && echo "$_out" | grep -q -- "$_w"; then
    check_pass $_c "$(echo "$_out" | grep -m1 -- "$_w" | cut -c1-300)"
  else
    check_fail $_c "exit $_rc (want 1, '$_w'): $(echo "$_out" | tail -n3 | tr '\n' ' ')"
  fi
}
uio_fail noiommu-uio-optin-missing "allow-no-iommu" --filename=pci:$BLK --no-fallback
[ -n "$SCR" ] && uio_fail noiommu-uio-access-platform "ACCESS_PLATFORM" --filename=pci:$SCR --allow-no-iommu

# vio-fwd over uio_pci_generic: the host checks every frame, in order.
# noiommu_fwd <tag> <wait> <path>: vio-fwd net1 -> net2 with --allow-no-iommu;
# checks the warning at start, every frame on the host, and that the JSON names
# both ports as <path> with physical DMA addresses.
noiommu_fwd() {
  fwd_start $1 --port pci:$NA --port pci:$NB --mode io --wait $2 --allow-no-iommu
  if grep -q "WARNING: port 0 .*WITHOUT an IOMMU" /tmp/$1.log; then
    check_pass $1-warning "$(grep -m1 'WITHOUT an IOMMU' /tmp/$1.log | cut -c1-200)"
  else
    check_fail $1-warning "no warning about the missing IOMMU: $(head -n3 /tmp/$1.log | tr '\n' ' ')"
  fi
  fwd_traffic $1 p1 net1 net2 1500 1000 4
  fwd_stop $1
  _n=$(grep -o "\"path\":\"$3\"[^{]*\"dma_addressing\":\"physical\"" /tmp/$1.json | wc -l)
  [ "$_n" -eq 2 ] && check_pass $1-json "both ports: path $3, dma_addressing physical" \
    || check_fail $1-json "--json names $_n of 2 ports as $3/physical: $(head -c 400 /tmp/$1.json)"
}
noiommu_fwd noiommu-uio poll uio

# vio-fio write + verify over uio_pci_generic, in a region the kernel path did not write.
timeout 300 /bin/vio-fio --filename=pci:$BLK --allow-no-iommu --name=uio --rw=randwrite --bs=4k --offset=4m --size=2m \
  --iodepth=16 --verify=crc32c --end_fsync=1 >/tmp/ufio.out 2>&1
_rc=$?
if [ $_rc -eq 0 ] && grep -q "verify: 512 blocks ok, 0 bad" /tmp/ufio.out && grep -q "backend=virtio dma=physical" /tmp/ufio.out \
  && grep -q "WITHOUT an IOMMU" /tmp/ufio.out; then
  check_pass noiommu-uio-fio-write-verify "$(grep -m1 'Disk:' /tmp/ufio.out | cut -c1-160); $(grep -m1 'verify:' /tmp/ufio.out)"
else
  check_fail noiommu-uio-fio-write-verify "exit $_rc: $(grep -v '^ *|' /tmp/ufio.out | tail -n 5 | tr '\n' ' ')"
fi
hostcheck blk-verify $((4 * MIB)) $((2 * MIB)) 4096 noiommu-uio

# Side by side, one boot: txonly pps (64-byte frames, 3 s, out of net2) and
# 4 KiB random reads at QD1 and QD32 (3 s each, polling), userspace without
# an IOMMU, then the kernel path (the same devices back on virtio-pci).
perf_tx() {  # perf_tx <path> <vio-fwd args...>
  _p=$1; shift
  timeout 120 /bin/vio-fwd --port pci:$NB --mode txonly --pkt-size 64 --duration 3 --stats-period 0 --json "$@" \
    >/tmp/ptx-$_p.json 2>/tmp/ptx-$_p.log
  _v=$(grep -o '"rate_pps":[0-9]*' /tmp/ptx-$_p.json | head -n1 | cut -d: -f2)
  _path=$(grep -o '"path":"[a-z-]*"' /tmp/ptx-$_p.json | head -n1)
  [ -n "$_v" ] && check_pass noiommu-perf-$_p-txonly "pps=$_v $_path" \
    || check_fail noiommu-perf-$_p-txonly "no rate: $(tail -n2 /tmp/ptx-$_p.log | tr '\n' ' ')"
}
perf_rr() {  # perf_rr <path> <qd> <vio-fio args...>
  _p=$1 _q=$2; shift 2
  timeout 120 /bin/vio-fio --filename=pci:$BLK --name=rr --rw=randread --bs=4k --iodepth=$_q --runtime=3 --time_based \
    --offset=4m --size=2m --output-format=json "$@" >/tmp/prr-$_p-$_q.json 2>/tmp/prr-$_p-$_q.err
  _v=$(sed -n 's/.*"read": {[^}]*"iops": \([0-9.]*\).*/\1/p' /tmp/prr-$_p-$_q.json | head -n1)
  [ -z "$_v" ] && _v=$(tr -d '\n ' < /tmp/prr-$_p-$_q.json | grep -o '"read":{[^}]*"iops":[0-9.]*' | head -n1 | sed 's/.*"iops"://')
  _b=$(grep -o '"backend": *"[a-z]*"' /tmp/prr-$_p-$_q.json | head -n1)
  [ -n "$_v" ] && check_pass noiommu-perf-$_p-randread-qd$_q "iops=$_v $_b" \
    || check_fail noiommu-perf-$_p-randread-qd$_q "no IOPS: $(tail -n2 /tmp/prr-$_p-$_q.err | tr '\n' ' ')"
}
perf_tx uio --allow-no-iommu
perf_rr uio 1 --allow-no-iommu
perf_rr uio 32 --allow-no-iommu
# no_hugepages <check>: with every hugepage freed, the no-IOMMU path says so
# (last on a path: freeing them fragments them for whoever comes next).
no_hugepages() {
  _hp=$(cat /proc/sys/vm/nr_hugepages)
  echo 0 > /proc/sys/vm/nr_hugepages
  uio_fail $1 "hugepages" --filename=pci:$BLK --allow-no-iommu
  echo $_hp > /proc/sys/vm/nr_hugepages
  echo "GUESTBED hugepages: $(cat /proc/sys/vm/nr_hugepages) x 2 MiB reserved again"
}
[ -n "$GUESTBED_NOIOMMU_VFIO" ] || no_hugepages noiommu-uio-no-hugepages
_out=$(/bin/vio-bind restore $NA $NB $BLK $SCR 2>&1) && check_pass noiommu-uio-restore "$(echo "$_out" | tr '\n' ' ' | cut -c1-200)" \
  || check_fail noiommu-uio-restore "$(echo "$_out" | tail -n2 | tr '\n' ' ')"

# ---- VFIO's no-IOMMU mode (issue 14) -----------------------------------------
# The guest kernel's vfio lacks it (no CONFIG_VFIO_NOIOMMU): the test bed
# rebuilt vfio.ko from Debian's linux-source of the same version
# (tools/guestbed/noiommu.py). Swapped in here, unloaded vfio first; vio-bind
# --no-iommu must now choose vfio-pci in no-IOMMU mode (it switches
# enable_unsafe_noiommu_mode on), and the same devices run over
# /dev/vfio/noiommu-N with MSI-X interrupts, physical addresses, hugepages:
# the host checks every frame and the image region written.
if [ -z "$GUESTBED_NOIOMMU_VFIO" ]; then
  check_fail noiommu-vfio-module "no vfio.ko with no-IOMMU mode: $GUESTBED_NOIOMMU_VFIO_ERROR"
else
  _rm=""
  for m in vfio_pci vfio_pci_core vfio_iommu_type1 vfio_virqfd vfio; do
    grep -q "^$m " /proc/modules && { rmmod $m || _rm="$_rm $m"; }
  done
  _ins=""
  insmod $GUESTBED_NOIOMMU_VFIO || _ins="$_ins vfio"
  for m in vfio_iommu_type1 vfio_virqfd vfio_pci_core vfio_pci; do
    [ -f /lib/modules/$m.ko ] && { insmod /lib/modules/$m.ko || _ins="$_ins $m"; }
  done
  _par=/sys/module/vfio/parameters/enable_unsafe_noiommu_mode
  if [ -z "$_rm$_ins" ] && [ "$(cat $_par 2>/dev/null)" = N ]; then
    check_pass noiommu-vfio-module "rebuilt vfio loaded (enable_unsafe_noiommu_mode=N), stock vfio-pci on top"
  else
    check_fail noiommu-vfio-module "rmmod failed:$_rm; insmod failed:$_ins; $_par=$(cat $_par 2>&1)"
  fi
  _out=$(/bin/vio-bind bind --no-iommu $NA $NB $BLK $SCR 2>&1); _rc=$?
  if [ $_rc -eq 0 ] && [ "$(pci_driver $NA)$(pci_driver $NB)$(pci_driver $BLK)$(pci_driver $SCR)" = vfio-pcivfio-pcivfio-pcivfio-pci ] \
    && echo "$_out" | grep -q "vfio-pci because vfio has a no-IOMMU mode" && [ "$(cat $_par)" = Y ] \
    && [ -c /dev/vfio/noiommu-$(basename $(readlink /sys/bus/pci/devices/$BLK/iommu_group)) ]; then
    check_pass noiommu-vfio-bind "$(echo "$_out" | grep -m1 'because' | cut -c1-200); $(ls /dev/vfio | tr '\n' ' ')"
  else
    check_fail noiommu-vfio-bind "exit $_rc, drivers $(pci_driver $NA) $(pci_driver $NB) $(pci_driver $BLK) $(pci_driver $SCR), $_par=$(cat $_par): $(echo "$_out" | tail -n3 | tr '\n' ' '); $(ls /dev/vfio | tr '\n' ' ')"
  fi
  uio_fail noiommu-vfio-optin-missing "allow-no-iommu" --filename=pci:$BLK --no-fallback
  [ -n "$SCR" ] && uio_fail noiommu-vfio-access-platform "ACCESS_PLATFORM" --filename=pci:$SCR --allow-no-iommu
  # Without CAP_SYS_ADMIN /proc/self/pagemap shows page frame numbers as 0
  # (the DMA memory's physical addresses unreadable): refused, nothing sent
  # to the device. Only SYS_ADMIN is dropped: CAP_SYS_RAWIO still opens the
  # no-IOMMU group, so the refusal comes from the pagemap.
  if [ -x /bin/setpriv ]; then
    # the path: busybox ash runs its own setpriv applet (no --bounding-set) for a bare name
    FIO_PREFIX="/bin/setpriv --bounding-set -sys_admin --"
    uio_fail noiommu-vfio-pagemap-unreadable "page frame numbers read as 0" --filename=pci:$BLK --allow-no-iommu --no-fallback
    FIO_PREFIX=
  else
    check_fail noiommu-vfio-pagemap-unreadable "no setpriv in the guest (util-linux on the host)"
  fi

  # vio-fwd on interrupts (MSI-X through VFIO eventfds): the host checks every frame, in order.
  noiommu_fwd noiommu-vfio interrupt vfio-noiommu
  # MSI-X is what this mode keeps over uio: every queue sleeps on its own vector.
  _n=$(grep -o '"path":"vfio-noiommu"[^{]*vfio-noiommu, no IOMMU (physical addresses), [0-9]* MSI-X vectors' /tmp/noiommu-vfio.json | wc -l)
  if [ "$_n" -eq 2 ] && ! grep -q "it polls" /tmp/noiommu-vfio.log; then
    check_pass noiommu-vfio-msix "$(grep -o 'vfio-noiommu, no IOMMU[^;]*MSI-X vectors' /tmp/noiommu-vfio.json | head -n1)"
  else
    check_fail noiommu-vfio-msix "$_n of 2 ports with MSI-X vectors: $(grep -o '"detail":"[^"]*"' /tmp/noiommu-vfio.json | head -n2 | tr '\n' ' ') $(grep -m1 'it polls' /tmp/noiommu-vfio.log)"
  fi

  # vio-fio write + verify, interrupts, in a region neither earlier path wrote.
  timeout 300 /bin/vio-fio --filename=pci:$BLK --allow-no-iommu --name=vfionoiommu --rw=randwrite --bs=4k --offset=8m --size=2m \
    --iodepth=16 --verify=crc32c --end_fsync=1 --interrupts >/tmp/vfio-nfio.out 2>&1
  _rc=$?
  if [ $_rc -eq 0 ] && grep -q "verify: 512 blocks ok, 0 bad" /tmp/vfio-nfio.out && grep -q "backend=virtio dma=physical" /tmp/vfio-nfio.out \
    && grep -q "vfio-noiommu, no IOMMU (physical addresses), [0-9]* MSI-X vectors" /tmp/vfio-nfio.out && grep -q "WITHOUT an IOMMU" /tmp/vfio-nfio.out; then
    check_pass noiommu-vfio-fio-write-verify "$(grep -m1 'Disk:' /tmp/vfio-nfio.out | cut -c1-200); $(grep -m1 'verify:' /tmp/vfio-nfio.out)"
  else
    check_fail noiommu-vfio-fio-write-verify "exit $_rc: $(grep -v '^ *|' /tmp/vfio-nfio.out | tail -n 5 | tr '\n' ' ')"
  fi
  hostcheck blk-verify $((8 * MIB)) $((2 * MIB)) 4096 noiommu-vfio

  perf_tx vfio-noiommu --allow-no-iommu
  perf_rr vfio-noiommu 1 --allow-no-iommu
  perf_rr vfio-noiommu 32 --allow-no-iommu
  no_hugepages noiommu-vfio-no-hugepages
  _out=$(/bin/vio-bind restore $NA $NB $BLK $SCR 2>&1) && check_pass noiommu-vfio-restore "$(echo "$_out" | tr '\n' ' ' | cut -c1-200)" \
    || check_fail noiommu-vfio-restore "$(echo "$_out" | tail -n2 | tr '\n' ' ')"
fi
perf_tx kernel
perf_rr kernel 1
perf_rr kernel 32
