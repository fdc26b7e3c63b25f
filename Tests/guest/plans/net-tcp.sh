# Real TCP through the guest (issue 15; a plan fragment of the default plan,
# split ring, one queue pair; host side: tools/guestbed/tcptest.py).
#
# Two virtio-net functions, net4 (MAC ...:71) and net5 (...:72), on taps
# with vnet headers, each tap in its own network namespace on the host
# (10.77.1.1 and 10.77.1.2, one subnet: only the guest joins them). The host
# runs iperf3 from one namespace to the other for a fixed byte count, twice
# in this boot: through the guest kernel (a Linux bridge over the two
# functions on virtio_net, which negotiates its offloads), then through
# vio-fwd over VFIO (io mode) twice: with --no-offloads (no CSUM, no TSO:
# the host's taps segment and checksum, every frame crosses on its own),
# then with its default offloads (CSUM and TSO4/6 both ways: 64 KiB TCP
# segments cross the guest as MRG_RXBUF chains, their vnet header passed
# through). The host checks every iperf3 JSON report (bytes sent == the
# transfer) and a SHA-256 exact transfer per run, and prints Gbit/s side by
# side (tcp-side-by-side). After each run the host sends one frame to net0; the
# guest waits for it (net0 on virtio_net, its rx_packets).

TA=$(fwd_dev 52:54:00:12:34:71)
TB=$(fwd_dev 52:54:00:12:34:72)
if [ -z "$TA" ] || [ -z "$TB" ]; then
  check_fail tcp-devices "no virtio-net functions with MACs 52:54:00:12:34:71/72 (got '$TA' '$TB')"
else
  check_pass tcp-devices "ns A side $TA (net4), ns B side $TB (net5)"
  echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null
  echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null
  net_if() { ls /sys/bus/pci/devices/$1/virtio*/net/ 2>/dev/null | head -n1; }
  has_if() { [ -n "$(net_if $1)" ]; }
  bind_kernel $NET || check_fail tcp-net0 "net0 $NET: $(pci_driver $NET)"
  wait_until 60 has_if $NET
  N0=$(net_if $NET)
  ip link set $N0 up
  n0_rx() { cat /sys/class/net/$N0/statistics/rx_packets 2>/dev/null || echo 0; }
  n0_moved() { [ "$(n0_rx)" -gt "$_rx0" ]; }
  # tcp_run <label>: the host's iperf3 run; returns once the host is done.
  tcp_run() {
    _rx0=$(n0_rx)
    hostreq tcp-iperf $1
    wait_until 900 n0_moved || check_fail tcp-$1-done "no word from the host on net0 ($N0) after tcp-iperf $1"
  }

  # 1. The guest kernel forwards: a bridge over both functions.
  bind_kernel $TA && bind_kernel $TB || check_fail tcp-kernel-bind "$TA: $(pci_driver $TA), $TB: $(pci_driver $TB)"
  wait_until 60 has_if $TA && wait_until 60 has_if $TB
  IA=$(net_if $TA)
  IB=$(net_if $TB)
  # STP is off on a new bridge: ports forward at once (no forward delay).
  if brctl addbr tcpbr0 && brctl addif tcpbr0 $IA && brctl addif tcpbr0 $IB \
     && ip link set $IA up && ip link set $IB up && ip link set tcpbr0 up; then
    check_pass tcp-kernel-bridge "tcpbr0 over $IA ($TA) and $IB ($TB), features $(virtio_features $TA | cut -c1-16)"
    tcp_run kernel
  else
    check_fail tcp-kernel-bridge "could not make the bridge over $IA and $IB"
  fi
  ip link set tcpbr0 down 2>/dev/null
  brctl delbr tcpbr0 2>/dev/null

  # 2. vio-fwd over VFIO, same functions, same transfer: offloads off, then on.
  bind_vfio $TA && bind_vfio $TB || check_fail tcp-vfio-bind "$TA: $(pci_driver $TA), $TB: $(pci_driver $TB)"
  for run in offloads-off offloads-on; do
    opts=""
    [ $run = offloads-off ] && opts=--no-offloads
    fwd_start tcp-$run --port pci:$TA --port pci:$TB --mode io --wait hybrid $opts
    tcp_run vfio-$run
    fwd_exit tcp-vfio-$run-exit /tmp/tcp-$run.log $FWD_PID
    grep -E 'offloads|summary:|  port ' /tmp/tcp-$run.log
  done
  # The offloads were used (vio-fwd's own count; the transfer's proof is the host's): large
  # segments came in (GUEST_TSO) and went out whole (HOST_TSO) or cut in software.
  # (one pattern per grep: busybox grep -o takes only one of several -e)
  json_sum() { grep -o "\"$1\":[0-9]*" /tmp/tcp-offloads-on.json | awk -F: '{ s += $2 } END { print s + 0 }'; }
  gso_in=$(json_sum rx_gso)
  gso_out=$(( $(json_sum tx_gso) + $(json_sum tx_segmented) ))
  if [ "${gso_in:-0}" -gt 0 ] && [ "${gso_out:-0}" -gt 0 ]; then
    check_pass tcp-vfio-offloads-used "GSO packets received $gso_in, sent as such or segmented $gso_out"
  else
    check_fail tcp-vfio-offloads-used "no GSO packet forwarded (rx ${gso_in:-0}, tx ${gso_out:-0}): $(grep offloads /tmp/tcp-offloads-on.log | tr '\n' ' ' | cut -c1-300)"
  fi
  hostreq tcp-report
  bind_kernel $TA && bind_kernel $TB || check_fail tcp-handback "$TA: $(pci_driver $TA), $TB: $(pci_driver $TB)"
  ip link set $N0 down
fi
