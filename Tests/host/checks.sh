# Tests/host/checks.sh — what the host check scripts share (sourced, not run):
# `CHECK PASS|FAIL name: detail` lines and their tally, the set-up failure
# exit, a bounded wait. The script sets SCRIPT (its name in messages) and
# TALLY (the tally's name: "TALLY: N passed, M failed") before sourcing.
PASSED=0
FAILED=0

say() { echo "$SCRIPT: $*"; }
pass() { PASSED=$((PASSED + 1)); echo "CHECK PASS $1${2:+: $2}"; }
fail() { FAILED=$((FAILED + 1)); echo "CHECK FAIL $1: $2"; }
# check NAME STATUS DETAIL: pass when STATUS is 0
check() { if [[ $2 == 0 ]]; then pass "$1" "$3"; else fail "$1" "$3"; fi; }
setup_failed() { echo "$SCRIPT: setup failed: $*" >&2; echo "$TALLY: $PASSED passed, $((FAILED + 1)) failed"; exit 2; }
# wait_for COND SECONDS: until the shell condition COND holds, at most SECONDS.
wait_for() {
  local cond=$1 limit=$2 start=$SECONDS
  while ! eval "$cond"; do
    ((SECONDS - start >= limit)) && return 1
    sleep 0.1
  done
}
# build_products P...: swift build each product into $SCRATCH (debug), or stop the script.
build_products() {
  say "building $*"
  local product
  for product in "$@"; do
    swift build --scratch-path "$SCRATCH" --product "$product" >"$WORK/build.log" 2>&1 ||
      { tail -30 "$WORK/build.log"; setup_failed "swift build --product $product failed"; }
  done
}
# tail_of FILE: a log's last lines on one line, for the CHECK FAIL that follows.
tail_of() { tail -5 "$1" 2>/dev/null | tr '\n' ' '; }
# start_qsd IMAGE SOCKET LOG [SECONDS]: qemu-storage-daemon exporting the raw
# IMAGE as a writable vhost-user-blk device on SOCKET, in the background
# (QSD_PID, also added to PIDS), output appended to LOG; waits for the socket
# (SECONDS, default 30) and returns 1 when it did not appear.
start_qsd() {
  qemu-storage-daemon \
    --blockdev "driver=file,node-name=file0,filename=$1" \
    --blockdev driver=raw,node-name=disk0,file=file0 \
    --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$2,writable=on" \
    >>"$3" 2>&1 &
  QSD_PID=$!
  PIDS+=("$QSD_PID")
  wait_for "[[ -S '$2' ]] || ! kill -0 $QSD_PID 2>/dev/null" "${4:-30}"
}
