# Side-by-side benchmark (issue 17): DPDK 22.11's testpmd (virtio PMD over
# vfio-pci) vs vio-fwd on the SAME two virtio-net functions, and vio-fio vs
# the kernel's virtio_blk + fio on one virtio-blk function. Numbers, not
# checks of speed: not in any CI plan. Run it with tools/bench/guest-bench
# (which boots the net-pair=on variants this needs, puts dpdk-testpmd and its
# PMD plugins in the initramfs, sets BENCH_* and prints the table).
#
# net1 and net2 are joined back to back (variant net-pair=on: a unix socket
# pair QEMU inherits, -netdev socket,fd=): what one sends, the other receives; a receiver without
# buffers holds the sender back, nothing is dropped on the way.
# Per run, interleaved (ABAB, who goes first alternates):
#   txrx  one process sends 64 B frames on net1 (txonly, CPU 0), another
#         counts them on net2 (rxonly, CPU 1); rate = the receiver's
#   io    one process forwards net1 <-> net2 (worker/lcore on CPU 1), seeded
#         with one burst of 32 frames per port (testpmd --tx-first, vio-fwd
#         --tx-first); rate = both ports' receive rates summed
# Rate: median of the tool's own per-second samples, zeros and the first and
# last (partial) second dropped. Frames: sent, received, counted drops; what
# is left is "in flight" when the sender stopped (its TX ring, the socket).
# Block (split boot only): 4 KiB random reads at QD1 and QD32, vio-fio over
# VFIO (polling, --interrupts) vs fio (io_uring) on virtio_blk loaded with
# poll_queues=1 (interrupts; --hipri: polled), on blk0 (a raw file on the
# host) and, with variant blk-null=on, on a null-co function (serial
# vio-null: no file behind it). Output: BENCH lines.
SECS=${BENCH_SECONDS:-3}
RUNS=${BENCH_RUNS:-3}
PARTS=${BENCH_PARTS:-net,blk}
MODES=${BENCH_MODES:-txrx io}
PMD_LOG="--log-level=pmd.net.virtio.init:debug"
# Like for like: 256 descriptors, burst 32, 64 B frames, one queue pair; no
# checksum or segmentation offload (testpmd asks the PMD for none, so it
# negotiates no CSUM/GUEST_CSUM/TSO: vio-fwd --no-offloads).
PMD_ARGS="--rxq=1 --txq=1 --rxd=256 --txd=256 --burst=32 --txpkts=64 --nb-cores=1 --total-num-mbufs=8192 --stats-period=1"
FWD_ARGS="--no-offloads --burst 32 --rxd 256 --txd 256 --pkt-size 64 --stats-period 1 --json"

mkdir -p /var/run
echo "BENCH config seconds=$SECS runs=$RUNS parts=$PARTS ring=$GUESTBED_RING pair=$GUESTBED_NET_PAIR cpus=$(nproc)"
echo "BENCH guest-load start $(cat /proc/loadavg)"

# median of numbers on stdin (one per line), 0 when none
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# rate_of <kind> <log>: median per-second receive rate (pps), zeros, first and last dropped
rate_of() {
  if [ "$1" = dpdk ]; then
    # testpmd: a "Port statistics" header per period, an Rx-pps line per port
    awk '/Port statistics/ {if (n) print s; s = 0; n = 1} /Rx-pps:/ {s += $2} END {if (n) print s}' "$2"
  else
    # vio-fwd live lines: "... port0 rx 0.1234 Mpps tx ... | port1 rx ..."
    awk '/ Mpps / {s = 0; for (i = 1; i < NF; i++) if ($i == "rx" && $(i+2) == "Mpps") s += $(i+1) * 1e6; print s}' "$2"
  fi | if [ -n "${RAW:-}" ]; then cat; else awk '$1 > 0' | sed '1d;$d' | median; fi
}
# dpdk_totals <log>: "rx rx_dropped tx tx_dropped" from testpmd's accumulated forward statistics
dpdk_totals() {
  awk '/Accumulated forward statistics/ {a = 1; next}
       a && /RX-packets:/ {rx = $2; rxd = $4}
       a && /TX-packets:/ {tx = $2; txd = $4; a = 0}
       END {print rx + 0, rxd + 0, tx + 0, txd + 0}' "$1"
}
# fwd_port_fields <json>: vio-fwd's --json summary one "key":value per line, the
# per-queue entries (which repeat the ports' counters) left out
fwd_port_fields() { sed 's/"queues":\[[^]]*\]//g' "$1" | tr ',' '\n'; }
# fwd_totals <json>: the same four from vio-fwd's --json summary, every port summed.
fwd_totals() {
  fwd_port_fields "$1" | awk -F: '/"rx_packets"/ {rx += $2} /"rx_dropped"/ {rxd += $2} /"rx_errors"/ {rxd += $2}
    /"tx_packets"/ {tx += $2} /"tx_dropped"/ {txd += $2} END {print rx + 0, rxd + 0, tx + 0, txd + 0}'
}
started() { grep -q "$2" "$1" 2>/dev/null; }
# stop <pid>: SIGINT, wait (bounded) for it to exit
stop() {
  kill -INT $1 2>/dev/null
  _n=300
  while kill -0 $1 2>/dev/null && [ $_n -gt 0 ]; do usleep 100000; _n=$((_n - 1)); done
  kill -0 $1 2>/dev/null && { kill -9 $1; echo "BENCH note: pid $1 did not stop on SIGINT; killed"; }
  wait $1 2>/dev/null
}

# tool_start <who> <tag> <cpu> <role> <port args>: one process in the background, log /tmp/b-<tag>.log
# who: dpdk | ours; role: txonly | rxonly | io
tool_start() {
  _who=$1 _tag=$2 _cpu=$3 _role=$4
  shift 4
  rm -f /tmp/b-$_tag.log /tmp/b-$_tag.json
  if [ $_who = dpdk ]; then
    _a=""
    for _p in "$@"; do _a="$_a -a $_p"; done
    _extra=""
    [ $_role = io ] && _extra="--tx-first"
    # main lcore and forwarding lcore on the same CPU (the main one sleeps between stats)
    # shellcheck disable=SC2086
    dpdk-testpmd --lcores "0@$_cpu,1@$_cpu" --in-memory $_a $PMD_LOG -- $PMD_ARGS --forward-mode=$_role $_extra \
      </dev/null >/tmp/b-$_tag.log 2>&1 &
    _pid=$!
    wait_until 120 started /tmp/b-$_tag.log "Port statistics" || echo "BENCH note: $_tag: testpmd did not start: $(tail -n 5 /tmp/b-$_tag.log | tr '\n' ' ')"
  else
    _a=""
    for _p in "$@"; do _a="$_a --port pci:$_p"; done
    _extra=""
    [ $_role = io ] && _extra="--tx-first"
    # alt (guest-bench --fwd-rx-args): vio-fwd whose receiving side takes those options (e.g. --wait hybrid)
    [ $_who = alt ] && [ $_role = rxonly ] && _extra="${BENCH_FWD_RX_ARGS:-}"
    [ $_who = alt ] && [ $_role = io ] && _extra="$_extra ${BENCH_FWD_RX_ARGS:-}"
    # a --contender of guest-bench: its options on every vio-fwd process it runs
    case " ${BENCH_CONTENDERS:-} " in *" $_who "*) eval "_extra=\"\$_extra \${BENCH_C_$_who}\"" ;; esac
    # guest-bench --baseline-vio-fwd: the contender "before" is that binary
    _bin=vio-fwd
    [ $_who = before ] && _bin=vio-fwd-before
    # shellcheck disable=SC2086
    taskset -c $_cpu $_bin $_a --mode $_role $_extra --cpus $_cpu $FWD_ARGS >/tmp/b-$_tag.json 2>/tmp/b-$_tag.log &
    _pid=$!
    wait_until 120 started /tmp/b-$_tag.log "forwarding:" || echo "BENCH note: $_tag: vio-fwd did not start: $(tail -n 5 /tmp/b-$_tag.log | tr '\n' ' ')"
  fi
  eval "PID_$_tag=$_pid"
}
totals_of() { if [ $1 = dpdk ]; then dpdk_totals /tmp/b-$2.log; else fwd_totals /tmp/b-$2.json; fi; }

# net_run <who> <mode> <run>: one measurement; prints BENCH net ...
net_run() {
  _w=$1 _m=$2 _r=$3
  if [ $_m = txrx ]; then
    tool_start $_w rx 1 rxonly $NB
    tool_start $_w tx 0 txonly $NA
    sleep $((SECS + 2))
    stop $PID_tx
    sleep 1
    stop $PID_rx
    rate=$(rate_of $_w /tmp/b-rx.log)
    # what the receiving side ran with (shows --fwd-rx-args took effect)
    [ $_w = alt ] && [ $_r = 1 ] && echo "BENCH receiver alt $(grep -m1 'forwarding:' /tmp/b-rx.log)"
    set -- $(totals_of $_w tx)
    sent=$3 notsent=$4
    set -- $(totals_of $_w rx)
    recv=$1 rxdrop=$2
  else
    tool_start $_w io 1 io $NA $NB
    sleep $((SECS + 2))
    stop $PID_io
    rate=$(rate_of $_w /tmp/b-io.log)
    set -- $(totals_of $_w io)
    recv=$1 rxdrop=$2 sent=$3 notsent=$4
  fi
  # every frame sent is received, counted as dropped, or still in flight when the sender stopped
  inflight=$((sent - recv - rxdrop))
  _log=/tmp/b-rx.log
  [ $_m = io ] && _log=/tmp/b-io.log
  echo "BENCH samples ring=$GUESTBED_RING mode=$_m who=$_w run=$_r pps: $(RAW=1 rate_of $_w $_log | tr '\n' ' ')"
  echo "BENCH net ring=$GUESTBED_RING mode=$_m who=$_w run=$_r pps=$rate sent=$sent not_sent=$notsent received=$recv rx_dropped=$rxdrop in_flight=$inflight"
  # vio-fwd's polling rounds (those that moved frames) and doorbells, all ports: how
  # busy the loop was and how it batched for the device (testpmd counts neither)
  if [ $_w != dpdk ]; then
    _j=/tmp/b-rx.json
    [ $_m = io ] && _j=/tmp/b-io.json
    _rounds=$(sed -n 's/.*"rounds":\([0-9]*\),"busy_rounds":\([0-9]*\).*/rounds=\1 busy_rounds=\2/p' $_j)
    _kicks=$(fwd_port_fields $_j | awk -F: '/"notifications"/ {n += $2} END {print n + 0}')
    echo "BENCH poll ring=$GUESTBED_RING mode=$_m who=$_w run=$_r ${_rounds:-rounds=0 busy_rounds=0} kicks=$_kicks"
  fi
  for _f in /tmp/b-*; do cp $_f /tmp/last-$_w-${_f#/tmp/b-}; done
  rm -f /tmp/b-*.log /tmp/b-*.json
}

case ",$PARTS," in *,net,*)
  NA=$(fwd_dev 52:54:00:12:34:61)
  NB=$(fwd_dev 52:54:00:12:34:62)
  if [ -z "$NA" ] || [ -z "$NB" ] || [ "$GUESTBED_NET_PAIR" != on ]; then
    check_fail bench-net-devices "need net1/net2 joined back to back (variant net-pair=on); got '$NA' '$NB' pair=$GUESTBED_NET_PAIR"
  elif ! command -v dpdk-testpmd >/dev/null; then
    check_fail bench-net-testpmd "dpdk-testpmd is not in the initramfs (tools/bench/guest-bench adds it)"
  else
    bind_vfio $NA && bind_vfio $NB || check_fail bench-net-bind "$(pci_driver $NA) $(pci_driver $NB)"
    for mode in $MODES; do
      r=1
      while [ $r -le $RUNS ]; do
        order="dpdk ours"
        [ $((r % 2)) = 0 ] && order="ours dpdk"
        # --fwd-rx-args: a third contender (txrx: its receiver; io: the forwarder), alternating ends of the order
        if [ -n "${BENCH_FWD_RX_ARGS:-}" ]; then
          order="dpdk ours alt"
          [ $((r % 2)) = 0 ] && order="alt ours dpdk"
        fi
        # guest-bench --contender: every contender in every run, the order rotated by one place per run
        if [ -n "${BENCH_CONTENDERS:-}" ]; then
          set -- $order $BENCH_CONTENDERS
          _i=1
          while [ $_i -lt $r ]; do _f=$1; shift; set -- "$@" $_f; _i=$((_i + 1)); done
          order="$*"
        fi
        for who in $order; do net_run $who $mode $r; done
        r=$((r + 1))
      done
    done
    # The negotiated features of both sides (the last run's logs).
    echo "BENCH features dpdk $(grep -h -e 'negotiate =' -e 'using .* path' /tmp/last-dpdk-*.log 2>/dev/null | sed 's/^[^:]*: //' | sort -u | tr '\n' ';')"
    echo "BENCH features ours $(grep -o '"detail":"[^"]*"' /tmp/last-ours-*.json 2>/dev/null | head -n1)"
    for _c in ${BENCH_CONTENDERS:-}; do eval "echo \"BENCH contender $_c: vio-fwd \${BENCH_C_$_c}\""; done
    check_pass bench-net "$GUESTBED_RING: $RUNS run(s) per mode and tool"
    bind_kernel $NA
    bind_kernel $NB
  fi
  ;;
esac

# vio-fio JSON / fio JSON: read IOPS and p99 (ns)
vio_iops() { sed -n 's/.*"read": {[^}]*"iops": \([0-9.]*\).*/\1/p' $1 | head -n1; }
vio_p99() { sed -n 's/.*"99.000000": \([0-9]*\).*/\1/p' $1 | head -n1; }
vio_p50() { sed -n 's/.*"50.000000": \([0-9]*\).*/\1/p' $1 | head -n1; }
fio_p50() { grep -m1 '"50.000000" :' $1 | sed 's/.*: *\([0-9]*\).*/\1/'; }
fio_iops() { grep -m1 '"iops" :' $1 | sed 's/[^0-9.]//g'; }
fio_p99() { grep -m1 '"99.000000" :' $1 | sed 's/.*: *\([0-9]*\).*/\1/'; }
kdev_ready() { [ -n "$(blk_kdev $BLK)" ]; }
blk_kdev() { ls /sys/bus/pci/devices/$1/virtio*/block/ 2>/dev/null | head -n1; }
# irq_snapshot <label> <cpu> <pattern> <pid>: halfway through the run, the
# matching /proc/interrupts lines (counts per CPU) and each IRQ's effective CPU; waits for pid
irq_snapshot() {
  sleep $(((SECS + 1) / 2))
  [ $r = 1 ] && grep -E "$3" /proc/interrupts | while read -r n rest; do
    n=${n%:}
    echo "BENCH irqmap $1 pinned=$2 irq=$n effective_cpu=$(cat /proc/irq/$n/effective_affinity_list 2>/dev/null) affinity=$(cat /proc/irq/$n/smp_affinity_list 2>/dev/null) line=$(echo $rest | tr -s ' ')"
  done
  wait $4
}
# vblk_load [module parameters]: virtio_blk (re)loaded with them (a module
# here: the kernel command line would not reach it), $BLK on it, D its disk
vblk_load() {
  bind_vfio $BLK
  rmmod virtio_blk && insmod /lib/modules/virtio_blk.ko "$@" || echo "BENCH note: could not reload virtio_blk $*"
  bind_kernel $BLK && wait_until 60 kdev_ready || echo "BENCH note: $BLK not back on virtio_blk"
  D=$(blk_kdev $BLK)
  [ $r = 1 ] && [ $qd = 1 ] && echo "BENCH blk device $BLK /dev/$D virtio_blk $* io_poll=$(cat /sys/block/$D/queue/io_poll 2>/dev/null) hw_queues=$(ls /sys/block/$D/mq 2>/dev/null | wc -l)"
}
blk_line() {  # blk_line <who> <qd> <run> <file> <iops> <p99> [p50]
  echo "BENCH blk dev=${_dev:-file} mode=$1 qd=$2 run=$3 iops=${5:-0} p99_ns=${6:-0} p50_ns=${7:-0}"
  [ -n "$5" ] || echo "BENCH note: blk $1 qd$2 run $3: no result: $(tail -n 3 $4 | tr '\n' ' ')"
}

# blk_bench <dev label>: the side-by-side rounds on $BLK (label file: blk0,
# a raw file on the host; null: QEMU's null-co, variant blk-null=on)
blk_bench() {
  _dev=$1
  echo "BENCH features kernel-blk dev=$_dev $(virtio_features $BLK)"
  r=1 qd=1
  JOB="--rw=randread --bs=4k --runtime=$SECS --time_based --offset=32m --size=8m"
  while [ $r -le $RUNS ]; do
    for qd in 1 32; do
      bind_vfio $BLK || echo "BENCH note: $BLK not on vfio-pci"
      for m in poll irq; do
        # shellcheck disable=SC2086
        timeout 120 vio-fio --filename=pci:$BLK $JOB --iodepth=$qd --output-format=json $([ $m = irq ] && echo --interrupts) \
          >/tmp/bb.out 2>&1
        blk_line vio-fio-$m $qd $r /tmp/bb.out "$(vio_iops /tmp/bb.out)" "$(vio_p99 /tmp/bb.out)" "$(vio_p50 /tmp/bb.out)"
        [ $r = 1 ] && [ $qd = 1 ] && [ $m = irq ] && grep -m1 -o '"details": *"[^"]*"' /tmp/bb.out | sed "s/^/BENCH features dev=$_dev vio-fio /"
        [ $m = irq ] && grep -o '"interrupts": *[0-9]*' /tmp/bb.out | head -n1 | sed "s/^/BENCH blk dev=$_dev vio-fio-irq qd=$qd run=$r /"
      done
      # At depth: one interrupt per half the depth (--iodepth_batch_complete_min,
      # the used-event index), beside the kernel + fio with the same option below.
      if [ $qd -gt 1 ]; then
        # shellcheck disable=SC2086
        timeout 120 vio-fio --filename=pci:$BLK $JOB --iodepth=$qd --output-format=json --interrupts \
          --iodepth_batch_complete_min=$((qd / 2)) >/tmp/bb.out 2>&1
        blk_line vio-fio-irqb $qd $r /tmp/bb.out "$(vio_iops /tmp/bb.out)" "$(vio_p99 /tmp/bb.out)" "$(vio_p50 /tmp/bb.out)"
        grep -o '"interrupts": *[0-9]*' /tmp/bb.out | head -n1 | sed "s/^/BENCH blk dev=$_dev vio-fio-irqb qd=$qd run=$r /"
      fi
      # The spin-wait hint's effect, in the same run: polling without PAUSE
      # shellcheck disable=SC2086
      timeout 120 vio-fio --filename=pci:$BLK $JOB --iodepth=$qd --output-format=json --idle-pause 0 >/tmp/bb.out 2>&1
      blk_line vio-fio-nopause-poll $qd $r /tmp/bb.out "$(vio_iops /tmp/bb.out)" "$(vio_p99 /tmp/bb.out)" "$(vio_p50 /tmp/bb.out)"
      # guest-bench --baseline-vio-fio: an older vio-fio, polling, in the same run
      if command -v vio-fio-before >/dev/null; then
        # shellcheck disable=SC2086
        timeout 120 vio-fio-before --filename=pci:$BLK $JOB --iodepth=$qd --output-format=json >/tmp/bb.out 2>&1
        blk_line vio-fio-before-poll $qd $r /tmp/bb.out "$(vio_iops /tmp/bb.out)" "$(vio_p99 /tmp/bb.out)" "$(vio_p50 /tmp/bb.out)"
      fi
      # The kernel as users get it (a queue and vector per vCPU), then with a
      # poll queue for --hipri (virtio_blk poll_queues=1).
      for m in irq poll; do
        if [ $m = irq ]; then vblk_load; else vblk_load poll_queues=1; fi
        # Batched like vio-fio at QD32 (one io_uring_enter per batch).
        # shellcheck disable=SC2086
        timeout 120 fio --name=k --filename=/dev/$D --ioengine=io_uring --direct=1 $JOB --iodepth=$qd \
          --iodepth_batch_submit=$qd --iodepth_batch_complete_min=1 --iodepth_batch_complete_max=$qd \
          $([ $m = poll ] && echo --hipri) --output-format=json >/tmp/bb.out 2>&1
        blk_line kernel-$m $qd $r /tmp/bb.out "$(fio_iops /tmp/bb.out)" "$(fio_p99 /tmp/bb.out)" "$(fio_p50 /tmp/bb.out)"
        if [ $m = irq ] && [ $qd -gt 1 ]; then
          # shellcheck disable=SC2086
          timeout 120 fio --name=k --filename=/dev/$D --ioengine=io_uring --direct=1 $JOB --iodepth=$qd \
            --iodepth_batch_submit=$qd --iodepth_batch_complete_min=$((qd / 2)) --iodepth_batch_complete_max=$qd \
            --output-format=json >/tmp/bb.out 2>&1
          blk_line kernel-irqb $qd $r /tmp/bb.out "$(fio_iops /tmp/bb.out)" "$(fio_p99 /tmp/bb.out)" "$(fio_p50 /tmp/bb.out)"
        fi
      done
    done
    r=$((r + 1))
  done
}

# blk_study: QD1 in interrupt mode on $BLK: which CPU takes the queue's
# interrupt, and does it matter where the waiting thread runs? Each tool
# unpinned (vio-fio: its default, on the CPU its queue's interrupt goes to,
# and anywhere: --no-interrupt-cpu), pinned to CPU 0, to CPU 1 (taskset),
# interleaved, RUNS times; in the first round, mid-run, the vectors'
# /proc/interrupts lines (counts per CPU) and effective CPUs.
blk_study() {
  r=1
  while [ $r -le $RUNS ]; do
    for pin in follow any 0 1; do
      ts=""
      case $pin in follow) ;; any) ts="" ;; *) ts="taskset -c $pin" ;; esac
      nofollow=""
      [ $pin = any ] && nofollow=--no-interrupt-cpu
      bind_vfio $BLK
      # shellcheck disable=SC2086
      $ts vio-fio --filename=pci:$BLK $JOB --iodepth=1 --output-format=json --interrupts $nofollow >/tmp/bb.out 2>&1 &
      irq_snapshot vio-fio-irq $pin "vfio-msix.*$BLK" $!
      blk_line study-vio-fio-irq-pin$pin 1 $r /tmp/bb.out "$(vio_iops /tmp/bb.out)" "$(vio_p99 /tmp/bb.out)" "$(vio_p50 /tmp/bb.out)"
      [ $pin = follow ] && continue  # the kernel has no such choice: its unpinned run is "any"
      vblk_load
      # shellcheck disable=SC2086
      $ts fio --name=k --filename=/dev/$D --ioengine=io_uring --direct=1 $JOB --iodepth=1 --output-format=json \
        >/tmp/bb.out 2>&1 &
      irq_snapshot kernel-irq $pin "$(basename $(ls -d /sys/bus/pci/devices/$BLK/virtio* | head -n1))-req" $!
      blk_line study-kernel-irq-pin$pin 1 $r /tmp/bb.out "$(fio_iops /tmp/bb.out)" "$(fio_p99 /tmp/bb.out)" "$(fio_p50 /tmp/bb.out)"
    done
    r=$((r + 1))
  done
}

case ",$PARTS," in *,blk,*)
  # The guest's clock: vio-fio and fio read it per I/O (a vDSO read with tsc,
  # a system call and an emulated device read with hpet or acpi_pm).
  _cs=/sys/devices/system/clocksource/clocksource0
  echo "BENCH clocksource current=$(cat $_cs/current_clocksource 2>/dev/null) available=$(cat $_cs/available_clocksource 2>/dev/null | tr ' ' ',')"
  NULLBLK=$(blk_by_serial vio-null)
  BLK=$(find_virtio 0x1042 | head -n1)
  if [ "$GUESTBED_RING" != split ]; then
    echo "BENCH note: block part in the split boot only"
  elif [ -z "$BLK" ]; then
    check_fail bench-blk-device "no virtio-blk function"
  else
    BLK_FILE=$BLK
    blk_bench file
    [ "${BENCH_STUDY:-on}" = on ] && blk_study
    if [ -n "$NULLBLK" ]; then
      bind_kernel $BLK_FILE
      BLK=$NULLBLK
      blk_bench null
      bind_kernel $BLK
    elif [ "$GUESTBED_BLK_NULL" = on ]; then
      check_fail bench-blk-null "variant blk-null=on but no virtio-blk function with serial vio-null"
    fi
    check_pass bench-blk "$RUNS run(s) per mode"
  fi
  ;;
esac
echo "BENCH guest-load end $(cat /proc/loadavg)"
