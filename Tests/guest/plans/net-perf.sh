# Side by side in one guest: vio-fwd over VFIO vs vio-fwd on the kernel path
# (the guest kernel's virtio_net + AF_PACKET rings), same devices, same
# offered load. Not part of the default plan (numbers, not checks of speed):
#
#   tools/guest-test --plan Tests/guest/plans/net-perf.sh --variants split --timeout 1800
#
# For each path: (1) a bounded load both can carry (RATE frames/s), vio-fwd
# sleeping on interrupts: CPU per packet from /proc/stat (every vCPU's busy
# time: the kernel path's softirq work counts too); (2) as fast as the host
# can send (rate 0), vio-fwd busy polling: the forwarding rate the host sees. Each phase is also checked like the CI test (HOSTCHECK
# net-traffic): every frame intact, once, in order. Results: `PERF ...` lines
# and the host checks' notes; docs/PERFORMANCE.md has a run.
COUNT_BOUNDED=${PERF_COUNT_BOUNDED:-6000}
RATE=${PERF_RATE:-1500}
COUNT_MAX=${PERF_COUNT_MAX:-20000}

fwd_dev() {
  for d in $(find_virtio 0x1041); do
    for a in /sys/bus/pci/devices/$d/virtio*/net/*/address; do
      [ "$(cat $a 2>/dev/null)" = "$1" ] && echo $d
    done
  done
  return 0
}
ifname_of() { ls /sys/bus/pci/devices/$1/virtio*/net/ 2>/dev/null | head -n1; }
busy_ms() {  # every CPU's non-idle time so far, in ms (USER_HZ = 100)
  awk '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) * 10 }' /proc/stat
}
FA=$(fwd_dev 52:54:00:12:34:61)
FB=$(fwd_dev 52:54:00:12:34:62)
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null

# perf_phase <label> <phase> <wait> <count> <rate> <port args...>: one vio-fwd, one load.
perf_phase() {
  _l=$1 _ph=$2 _w=$3 _n=$4 _r=$5
  shift 5
  rm -f /tmp/perf.stats /tmp/perf.json /tmp/perf.log
  /bin/vio-fwd "$@" --mode io --wait $_w --stats-period 1 --stats-file /tmp/perf.stats --json >/tmp/perf.json 2>/tmp/perf.log &
  _p=$!
  wait_until 120 grep -q "forwarding:" /tmp/perf.log || check_fail perf-$_l-$_ph-start "$(tail -n3 /tmp/perf.log | tr '\n' ' ')"
  # _got N: port A took N frames (received or counted as dropped), or — once
  # frames started to arrive — nothing moved for 10 s.
  _got() {
    _v=$(sed -n 's/^port0.rx_packets=//p' /tmp/perf.stats 2>/dev/null)
    _d=$(sed -n 's/^port0.rx_dropped=//p' /tmp/perf.stats 2>/dev/null)
    _tot=$(( ${_v:-0} + ${_d:-0} ))
    [ $_tot -ge "$1" ] && return 0
    if [ "$_tot" = "$_last" ]; then _idle=$(( _idle + 1 )); else _idle=0; _last=$_tot; fi
    [ $_tot -gt 0 ] && [ $_idle -ge 100 ]
  }
  _last=0
  _idle=0
  _b0=$(busy_ms)
  hostreq net-traffic perf-$_l-$_ph $_ph "{\"from\":\"net1\",\"to\":\"net2\",\"count\":$_n,\"rate\":$_r,\"flows\":4}"
  wait_until 900 _got $_n
  hostreq net-traffic-wait perf-$_l-$_ph $_ph
  _b1=$(busy_ms)
  kill -INT $_p
  wait $_p
  _fw=$(sed -n 's/.*"forwarded":\([0-9]*\).*/\1/p' /tmp/perf.json)
  _rate=$(sed -n 's/.*"rate_pps":\([0-9]*\).*/\1/p' /tmp/perf.json)
  _cpu=$(sed -n 's/.*"cpu_ns":\([0-9]*\).*/\1/p' /tmp/perf.json)
  echo "PERF $_l $_ph wait=$_w offered=$_r/s sent=$_n forwarded=$_fw rate_pps=$_rate worker_cpu_us_per_packet=$(( ${_cpu:-0} / 1000 / (${_fw:-0} + 1) )) guest_busy_ms=$((_b1 - _b0)) guest_cpu_us_per_packet=$(( (_b1 - _b0) * 1000 / (${_fw:-0} + 1) ))"
  grep -e 'total:' /tmp/perf.log
  echo "VIOFWD-JSON perf-$_l-$_ph $(cat /tmp/perf.json)"
  hostcheck net-traffic perf-$_l-$_ph
}

# perf_run <label> <port args...>: a bounded load in interrupt mode (CPU per
# packet), then as fast as the host sends, busy polling (forwarding rate).
perf_run() {
  _lab=$1
  shift
  perf_phase $_lab bounded interrupt $COUNT_BOUNDED $RATE "$@"
  perf_phase $_lab max poll $COUNT_MAX 0 "$@"
}

if [ -z "$FA" ] || [ -z "$FB" ]; then
  check_fail perf-devices "no net1/net2 (got '$FA' '$FB')"
else
  IA=$(ifname_of $FA)
  IB=$(ifname_of $FB)
  ip link set $IA mtu 1500 up
  ip link set $IB mtu 1500 up
  wait_until 60 grep -q 1 /sys/class/net/$IB/carrier
  check_pass perf-devices "$FA ($IA) -> $FB ($IB)"
  perf_run kernel --port $IA --port $IB
  ip link set $IA down
  ip link set $IB down
  bind_vfio $FA && bind_vfio $FB || check_fail perf-bind "$(pci_driver $FA) $(pci_driver $FB)"
  perf_run vfio --port pci:$FA --port pci:$FB
  bind_kernel $FA
  bind_kernel $FB
fi
