#!/usr/bin/env bash
# Issue 16: a real Prometheus server (Debian's package, on loopback, with a
# config written here) scrapes vio-fwd and vio-fio while they run against
# vhost-user backends (dpdk-testpmd, qemu-storage-daemon; no VM), and its query
# API (/api/v1/query) returns the packet and I/O counters equal to the tools'
# own final JSON summaries.
#
# Exact, not approximate: each tool runs with --metrics-linger, so after its
# last counters are in (vio_run_finished 1) it keeps serving until Prometheus
# has scraped them; the script waits (bounded) for Prometheus to hold
# vio_run_finished == 1, then compares the last scraped values once.
# "During the run" is shown by a scrape with traffic counted and
# vio_run_finished still 0, seen before the tool is told to stop.
#
#   Tests/host/prometheus.sh            all checks
#   VHOST_SCRATCH=.build-vhost ...      swift build scratch path (default .build)
#   PROM_KEEP=1 ...                     keep the work directory (logs, TSDB)
#
# Prints `CHECK PASS|FAIL name: detail` lines and closes with
# `prometheus: N passed, M failed`; exits 1 when a check failed, 2 when the
# set-up failed. Needs root (apt-get) on Debian 12.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SCRATCH=${VHOST_SCRATCH:-.build}
WORK=$(mktemp -d /tmp/vio-prom.XXXXXX)
PIDS=()
SCRIPT=prometheus.sh
TALLY=prometheus
source Tests/host/checks.sh

cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ -n ${PROM_KEEP:-} ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

source tools/lib/packages.sh
need_packages prometheus dpdk qemu-system-common qemu-utils python3 curl

build_products vio-fwd vio-fio
FWD="$ROOT/$SCRATCH/debug/vio-fwd"
FIO="$ROOT/$SCRATCH/debug/vio-fio"
Q="python3 $ROOT/Tests/host/prom_query.py"

# ---- Prometheus on loopback, scraping both tools every second -----------------
read -r PROM_PORT FWD_PORT FIO_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
PROM="http://127.0.0.1:$PROM_PORT"
cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: vio-fwd
    static_configs: [{targets: ["127.0.0.1:$FWD_PORT"]}]
  - job_name: vio-fio
    static_configs: [{targets: ["127.0.0.1:$FIO_PORT"]}]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
PIDS+=("$PROM_PID")
wait_for "curl -sf '$PROM/-/ready' >/dev/null || ! kill -0 $PROM_PID 2>/dev/null" 120
curl -sf "$PROM/-/ready" >/dev/null || { tail -20 "$WORK/prometheus.log"; setup_failed "prometheus did not become ready on $PROM"; }
say "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') on $PROM; vio-fwd on :$FWD_PORT, vio-fio on :$FIO_PORT"

# value QUERY: the query's sum ("none" when no series)
value() { $Q value "$PROM" "$1" 2>/dev/null || echo error; }
# in_run JOB METRIC: a scrape taken while the tool ran counted traffic
in_run() { [[ $(value "last_over_time(vio_run_finished{job=\"$1\"}[10m]) == 0") == 0 && $(value "sum(last_over_time($2{job=\"$1\"}[10m]))") =~ ^[1-9][0-9]*$ ]]; }
# finished JOB: Prometheus holds a scrape of the tool's final values
finished() { [[ $(value "last_over_time(vio_run_finished{job=\"$1\"}[10m])") == 1 ]]; }

# ---- vio-fwd: txonly into testpmd (rxonly) over vhost-user --------------------
sock="$WORK/net.sock"
mkfifo "$WORK/testpmd.fifo"
dpdk-testpmd -l 0-1 --no-pci --no-huge -m 512 --file-prefix vio-prom \
  --vdev "net_vhost0,iface=$sock,queues=1" -- \
  --forward-mode=rxonly --port-topology=loop --nb-cores=1 --total-num-mbufs=8192 --disable-link-check \
  <"$WORK/testpmd.fifo" >"$WORK/testpmd.log" 2>&1 &
TP_PID=$!
PIDS+=("$TP_PID")
exec {TP_FD}>"$WORK/testpmd.fifo"
wait_for "grep -q 'vhost-user server: socket created' '$WORK/testpmd.log' || ! kill -0 $TP_PID 2>/dev/null" 60 ||
  { tail -20 "$WORK/testpmd.log"; setup_failed "dpdk-testpmd did not start"; }
out="$WORK/fwd.json"
"$FWD" --port "vhost-user:$sock" --mode txonly --stats-period 0 --json --metrics-port "$FWD_PORT" --metrics-linger 120 \
  >"$out" 2>"$out.err" &
FWD_PID=$!
PIDS+=("$FWD_PID")
wait_for "in_run vio-fwd vio_net_tx_packets_total || ! kill -0 $FWD_PID 2>/dev/null" 120
in_run vio-fwd vio_net_tx_packets_total
check "fwd/scraped-during-run" $? "prometheus scraped vio-fwd while it forwarded: $(value 'sum(last_over_time(vio_net_tx_packets_total{job="vio-fwd"}[10m]))') frames sent so far$(kill -0 $FWD_PID 2>/dev/null || echo "; vio-fwd exited early: $(tail_of "$out.err")")"
json=$(curl -sf "http://127.0.0.1:$FWD_PORT/metrics.json")
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert not j["finished"] and any(m["name"]=="vio_net_tx_packets_total" and m["value"]>0 for m in j["metrics"])' "$json" 2>/dev/null
check "fwd/metrics-json" $? "GET /metrics.json during the run: $(echo "$json" | head -c 160)..."
kill -INT "$FWD_PID" 2>/dev/null
# vio-fwd exits once a scrape has read its final values (or after the linger);
# then Prometheus must hold that scrape (it stores it as it reads it: bounded wait).
wait "$FWD_PID"
rc=$?
wait_for "finished vio-fwd" 60
echo >&"$TP_FD"
exec {TP_FD}>&-
wait_for "! kill -0 $TP_PID 2>/dev/null" 30 || kill -9 "$TP_PID" 2>/dev/null
finished vio-fwd && ! grep -q "no scrape read the final" "$out.err" && [[ $rc == 0 ]]
check "fwd/final-scrape" $? "vio-fwd exit $rc after prometheus scraped its final values (vio_run_finished $(value 'last_over_time(vio_run_finished{job="vio-fwd"}[10m])'))$( [[ $rc != 0 ]] && echo ": $(tail_of "$out.err")")"
$Q fwd "$PROM" vio-fwd "$out" >"$WORK/fwd.compare" 2>&1
check "fwd/prometheus-equals-summary" $? "$(grep -c '^ok' "$WORK/fwd.compare") counters equal, $(grep -vc '^ok' "$WORK/fwd.compare") not: $(grep -m3 -v '^ok' "$WORK/fwd.compare" | tr '\n' ' ')$(grep -m1 'tx_packets' "$WORK/fwd.compare")"

# ---- vio-fio: random writes into qemu-storage-daemon's vhost-user-blk export ---
img="$WORK/disk.raw"
sock="$WORK/blk.sock"
truncate -s 64M "$img"
start_qsd "$img" "$sock" "$WORK/qsd.log" 60 || setup_failed "qemu-storage-daemon did not create $sock: $(tail_of "$WORK/qsd.log")"
out="$WORK/fio.json"
# Time-based, stopped (SIGINT, a normal end without verify) once a scrape saw it working.
"$FIO" --filename="vhost-user:$sock" --rw=randwrite --bs=4k --size=16m --iodepth=8 --time_based --runtime=300 \
  --output-format=json --metrics-port "$FIO_PORT" --metrics-linger 120 >"$out" 2>"$out.err" &
FIO_PID=$!
PIDS+=("$FIO_PID")
wait_for "in_run vio-fio vio_blk_written_bytes_total || ! kill -0 $FIO_PID 2>/dev/null" 120
in_run vio-fio vio_blk_written_bytes_total
check "fio/scraped-during-run" $? "prometheus scraped vio-fio while it wrote: $(value 'sum(last_over_time(vio_blk_written_bytes_total{job="vio-fio"}[10m]))') bytes so far$(kill -0 $FIO_PID 2>/dev/null || echo "; vio-fio exited early: $(tail_of "$out.err")")"
kill -INT "$FIO_PID" 2>/dev/null
wait "$FIO_PID"
rc=$?
wait_for "finished vio-fio" 60
kill "$QSD_PID" 2>/dev/null
finished vio-fio && ! grep -q "no scrape read the final" "$out.err" && [[ $rc == 0 ]]
check "fio/final-scrape" $? "vio-fio exit $rc after prometheus scraped its final values (vio_run_finished $(value 'last_over_time(vio_run_finished{job="vio-fio"}[10m])'))$( [[ $rc != 0 ]] && echo ": $(tail_of "$out.err")")"
$Q fio "$PROM" vio-fio "$out" >"$WORK/fio.compare" 2>&1
check "fio/prometheus-equals-summary" $? "$(grep -c '^ok' "$WORK/fio.compare") counters equal, $(grep -vc '^ok' "$WORK/fio.compare") not: $(grep -m3 -v '^ok' "$WORK/fio.compare" | tr '\n' ' ')$(grep -m1 'written bytes' "$WORK/fio.compare")"
bucket=$(value 'sum(last_over_time(vio_blk_latency_seconds_bucket{job="vio-fio",op="write",le="+Inf"}[10m]))')
p99=$(value 'histogram_quantile(0.99, sum by (le) (last_over_time(vio_blk_latency_seconds_bucket{job="vio-fio",op="write"}[10m])))')
[[ $p99 != none && $p99 != error && $p99 != NaN ]]
check "fio/latency-histogram" $? "prometheus reads the write latency histogram: $bucket completions, p99 $p99 s (histogram_quantile)"

echo "prometheus: $PASSED passed, $FAILED failed"
((FAILED == 0))
