# vio-fwd end to end (a plan fragment, run by the default plan when
# /bin/vio-fwd is in the initramfs; see tools/guestbed/fwdtest.py).
#
# Two extra virtio-net devices, net1 (MAC ...:61, port A) and net2 (...:62,
# port B), both MTU 9000, behind host-side sockets (the stream netdev) or
# multi-queue taps (net-queues > 1). vio-fwd forwards A -> B over VFIO, both
# functions in one IOMMU container and one buffer pool (zero copy); the host
# sends numbered, checksummed frames of several flows, 64..9014 bytes, at a
# bounded rate into net1 and checks on net2 that every frame arrived intact,
# once, in per-flow order — or that vio-fwd counted each missing one as a
# drop (HOSTCHECK net-traffic). Per variant: split ring, hybrid wait, and
# link down/up of net2 from QMP while forwarding; packed ring, interrupt
# wait; net-queues=N: N queue pairs, N workers. Bad input exits 64.
# packed with net-queues > 1 also runs vio-fwd with 2 KiB buffers: jumbo
# frames arrive (MRG_RXBUF) and leave as chains of buffers, checked the same
# way on the host (run `chains`).

FA=$(fwd_dev 52:54:00:12:34:61)
FB=$(fwd_dev 52:54:00:12:34:62)
if [ -z "$FA" ] || [ -z "$FB" ]; then
  check_fail net-fwd-devices "no virtio-net functions with MACs 52:54:00:12:34:61/62 (got '$FA' '$FB')"
else
  check_pass net-fwd-devices "port A $FA (net1), port B $FB (net2)"
  Q=${GUESTBED_NET_QUEUES:-1}
  WAIT=hybrid
  [ "$GUESTBED_RING" = packed ] && WAIT=interrupt
  FLOWS=4
  [ "$Q" -gt 1 ] && FLOWS=16
  COUNT=3000
  RATE=1500

  # Bad input: a clear message and exit status 64.
  fwd_usage() {
    _n=$1; shift
    _out=$(/bin/vio-fwd "$@" 2>&1 >/dev/null)
    _rc=$?
    if [ $_rc -eq 64 ] && [ -n "$_out" ]; then
      check_pass net-fwd-usage-$_n "$(echo "$_out" | head -n1)"
    else
      check_fail net-fwd-usage-$_n "exit $_rc (want 64): $(echo "$_out" | head -n2 | tr '\n' ' ')"
    fi
  }
  fwd_usage not-virtio-net --port pci:$BLK
  fwd_usage unknown-port --port pci:$FA --port nosuch0
  fwd_usage burst-0 --port pci:$FA --burst 0

  bind_vfio $FA && bind_vfio $FB || check_fail net-fwd-bind "$FA: $(pci_driver $FA), $FB: $(pci_driver $FB)"
  # Opens both devices, finds rings of 256 (QEMU's default): a burst of 512 cannot fit.
  fwd_usage burst-over-ring --port pci:$FA --port pci:$FB --rxd 1024 --txd 1024 --burst 512

  rm -f /tmp/fwd.stats /tmp/fwd.json /tmp/fwd.log
  /bin/vio-fwd --port pci:$FA --port pci:$FB --mode io --queues $Q --wait $WAIT --stats-period 1 \
    --stats-file /tmp/fwd.stats --json >/tmp/fwd.json 2>/tmp/fwd.log &
  FWD=$!
  if wait_until 120 grep -q "forwarding:" /tmp/fwd.log; then
    check_pass net-fwd-start "$(grep -m1 'forwarding:' /tmp/fwd.log)"
  else
    check_fail net-fwd-start "vio-fwd did not start: $(tail -n3 /tmp/fwd.log | tr '\n' ' ')"
  fi
  # fwd_got N: vio-fwd has received N frames on port A (the host's side holds
  # frames while the RX ring is empty: nothing is lost before the driver).
  fwd_got() { _v=$(sed -n 's/^port0.rx_packets=//p' /tmp/fwd.stats 2>/dev/null); [ "${_v:-0}" -ge "$1" ]; }
  fwd_phase() {  # fwd_phase <name> <count> <json-extra>; the run is $FWD_RUN (default fwd)
    hostreq net-traffic ${FWD_RUN:-fwd} $1 "{\"from\":\"net1\",\"to\":\"net2\",\"count\":$2,\"rate\":$RATE,\"flows\":$FLOWS,\"jumbo\":true$3}"
    _total=$(( ${_sofar:-0} + $2 ))
    wait_until 300 fwd_got $_total || check_fail net-fwd-$1-received "vio-fwd received $(sed -n 's/^port0.rx_packets=//p' /tmp/fwd.stats) of $_total frames"
    _sofar=$_total
    hostreq net-traffic-wait ${FWD_RUN:-fwd} $1
  }
  fwd_phase p1 $COUNT ""
  if [ "$GUESTBED_RING" = split ] && [ "$Q" -eq 1 ]; then
    # Link down / up of port B from QMP while forwarding: reported, and forwarding resumes.
    hostreq qmp set_link '{"name":"net2","up":false}'
    wait_until 60 grep -q "port 1: link down" /tmp/fwd.log && check_pass net-fwd-link-down "$(grep -m1 'port 1: link down' /tmp/fwd.log)" \
      || check_fail net-fwd-link-down "vio-fwd reported no link down on port 1: $(tail -n2 /tmp/fwd.log | tr '\n' ' ')"
    hostreq qmp set_link '{"name":"net2","up":true}'
    wait_until 60 grep -q "port 1: link up" /tmp/fwd.log && check_pass net-fwd-link-up "$(grep -m1 'port 1: link up' /tmp/fwd.log)" \
      || check_fail net-fwd-link-up "vio-fwd reported no link up on port 1: $(tail -n2 /tmp/fwd.log | tr '\n' ' ')"
    fwd_phase p2 600 ""
  fi
  fwd_exit net-fwd-exit /tmp/fwd.log $FWD
  grep -e 'summary:' -e '  port ' /tmp/fwd.log
  echo "VIOFWD-JSON fwd $(cat /tmp/fwd.json)"
  hostcheck net-traffic fwd
  if [ "$GUESTBED_RING" = packed ] && [ "$Q" -gt 1 ]; then
    # MRG_RXBUF (negotiated since a buffer size is given) with buffers smaller than a jumbo
    # frame: the device spreads each large frame over several buffers, vio-fwd
    # forwards the chain as is; the host checks every frame's bytes and order.
    rm -f /tmp/fwd.stats /tmp/fwd.json /tmp/fwd.log
    /bin/vio-fwd --port pci:$FA --port pci:$FB --mode io --queues $Q --wait $WAIT --stats-period 1 \
      --buffer-size 2048 --stats-file /tmp/fwd.stats --json >/tmp/fwd.json 2>/tmp/fwd.log &
    FWD=$!
    if wait_until 120 grep -q "forwarding:" /tmp/fwd.log; then
      check_pass net-fwd-chains-start "$(grep -m1 'forwarding:' /tmp/fwd.log)"
    else
      check_fail net-fwd-chains-start "vio-fwd --buffer-size 2048 did not start: $(tail -n3 /tmp/fwd.log | tr '\n' ' ')"
    fi
    FWD_RUN=chains
    _sofar=0
    fwd_phase c1 1000 ""
    fwd_exit net-fwd-chains-exit /tmp/fwd.log $FWD
    # The guest's own count only says chains were used; the host check proves the bytes.
    # Port A (first in the JSON) received chains, port B (last) sent them.
    _rxc=$(grep -o '"rx_chains":[0-9]*' /tmp/fwd.json | head -n1 | cut -d: -f2)
    _txc=$(grep -o '"tx_chains":[0-9]*' /tmp/fwd.json | tail -n1 | cut -d: -f2)
    if [ "${_rxc:-0}" -gt 0 ] && [ "${_txc:-0}" -gt 0 ]; then
      check_pass net-fwd-chains-used "port A received $_rxc frames as chains, port B sent $_txc chains"
    else
      check_fail net-fwd-chains-used "no multi-buffer frames with 2 KiB buffers: $(grep -e '  port ' /tmp/fwd.log | tr '\n' ' ')"
    fi
    echo "VIOFWD-JSON chains $(cat /tmp/fwd.json)"
    hostcheck net-traffic chains
  fi

  # RSS with hash report (issue 15; net-queues > 1: virtio-net-pci rss=on,hash=on,
  # QEMU's software RSS): vio-fwd --tag-rx writes each frame's receive queue and
  # reported hash into its source MAC; the host checks every flow came back on
  # the queue the table names for its Toeplitz hash, with that hash, and that
  # the second table (each bucket flipped) moved the flows (HOSTCHECK net-rss).
  if [ "${GUESTBED_NET_RSS:-off}" = on ] && [ "$Q" -eq 2 ]; then
    rss_got() { _v=$(sed -n 's/^port0.rx_packets=//p' /tmp/rss.stats 2>/dev/null); [ "${_v:-0}" -ge "$1" ]; }
    # pinned_cpus <pid>: the CPU of each of its threads pinned to one CPU
    # (affinity from /proc/<pid>/task/*/status), sorted; a pinned thread
    # that last ran elsewhere (stat field 39) is printed as <cpu>!<where>.
    pinned_cpus() {
      for _t in /proc/$1/task/*; do
        _a=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' $_t/status)
        case "$_a" in ''|*,*|*-*) continue ;; esac
        _on=$(awk '{print $39}' $_t/stat)
        [ "$_on" = "$_a" ] && echo "$_a" || echo "$_a!$_on"
      done | sort | tr '\n' ' '
    }
    rss_run() {  # rss_run <phase> <table> [vio-fwd options]
      rm -f /tmp/rss.stats /tmp/rss.log
      _ph=$1 _tab=$2; shift 2
      /bin/vio-fwd --port pci:$FA --port pci:$FB --mode io --queues 2 --rss --rss-hash udp4 --rss-table $_tab --tag-rx \
        --stats-period 1 --stats-file /tmp/rss.stats "$@" >/dev/null 2>/tmp/rss.log &
      _rss=$!
      set -- $_ph $_tab "$@"
      if wait_until 120 grep -q "forwarding:" /tmp/rss.log; then
        check_pass net-rss-start-$1 "table $2: $(grep -m1 'forwarding:' /tmp/rss.log | cut -c1-120)"
      else
        check_fail net-rss-start-$1 "vio-fwd --rss did not start: $(tail -n3 /tmp/rss.log | tr '\n' ' ')"
      fi
      # --cpus 1,0 (issue 15): one worker pinned to each listed CPU, and running there;
      # the main thread keeps the whole set. Read while the workers run (each
      # pins itself as it starts: waited for).
      if [ "$3" = --cpus ]; then
        pins_are() { [ "$(pinned_cpus $_rss)" = "$1" ]; }
        wait_until 60 pins_are "0 1 "
        _pins=$(pinned_cpus $_rss)
        [ "$_pins" = "0 1 " ] && check_pass net-fwd-cpus "workers pinned to CPUs: $_pins(--cpus $4; $(grep -o 'workers pinned to CPUs [0-9,]*' /tmp/rss.log))" \
          || check_fail net-fwd-cpus "--cpus $4: threads pinned to '$_pins' (want one on 0 and one on 1, each running there)"
      fi
      hostreq net-traffic rss $1 "{\"from\":\"net1\",\"to\":\"net2\",\"count\":400,\"rate\":400,\"flows\":16,\"rss\":{\"table\":[$2]}}"
      wait_until 120 rss_got 400 || check_fail net-rss-received-$1 "vio-fwd received $(sed -n 's/^port0.rx_packets=//p' /tmp/rss.stats) of 400 frames"
      hostreq net-traffic-wait rss $1
      kill -INT $_rss
      wait $_rss
      _rc=$?
      [ $_rc -eq 0 ] && check_pass net-rss-exit-$1 "$(grep -m1 'rxq' /tmp/rss.log | cut -c1-160)" \
        || check_fail net-rss-exit-$1 "vio-fwd exit status $_rc: $(tail -n3 /tmp/rss.log | tr '\n' ' ')"
    }
    rss_run t1 0,1,1,0 --cpus 1,0
    rss_run t2 1,0,0,1
    hostcheck net-rss rss
  fi
  bind_kernel $FA && bind_kernel $FB || check_fail net-fwd-handback "$FA: $(pci_driver $FA), $FB: $(pci_driver $FB)"
fi
