#!/usr/bin/env bash
# Block checks on the host, no VM: BlockIO's kernel path (io_uring, O_DIRECT)
# through vio-fio and the example log on a temporary file, and blk-bench's
# allocation check of the data path (release build: 0 heap allocations per
# request on the driver thread, virtio through the simulated device and io_uring).
# The VFIO path runs in the guest (tools/guest-test, Tests/guest/plans/blk.sh).
# Prints CHECK lines and closes with `blk-host: N passed, M failed`; exit 1 on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
passed=0 failed=0
pass() { echo "CHECK PASS $1${2:+: $2}"; passed=$((passed + 1)); }
fail() { echo "CHECK FAIL $1: $2"; failed=$((failed + 1)); }

swift build --product vio-fio >/dev/null && swift build --product block-log >/dev/null &&
  swift build -c release --product blk-bench >/dev/null || { echo "blk-host: build failed"; echo "blk-host: 0 passed, 1 failed"; exit 1; }
bin=$(swift build --show-bin-path)
fio=$bin/vio-fio
img=$(mktemp /var/tmp/blk-host-XXXXXX.img)
trap 'rm -f "$img"' EXIT
truncate -s 64M "$img"

# run <check> <wanted-exit> <args...>: vio-fio on the image, output in $out
run() {
  local c=$1 want=$2
  shift 2
  out=$("$fio" --filename="$img" "$@" 2>&1)
  local rc=$?
  [ "$rc" -eq "$want" ] && return 0
  fail "$c" "vio-fio $* exited $rc (want $want): $(echo "$out" | grep -v '^ *|' | tail -n 3 | tr '\n' ' ')"
  return 1
}
expect() { # expect <check> <pattern>...
  local c=$1 p
  shift
  for p in "$@"; do
    grep -qF -- "$p" <<<"$out" || { fail "$c" "output lacks '$p'"; return 1; }
  done
  pass "$c"
}

run write-verify 0 --rw=write --bs=4k --size=4m --iodepth=16 --verify=crc32c --end_fsync=1 &&
  expect write-verify "verify: 1024 blocks ok, 0 bad" "flushes=1"
run reverify 0 --rw=randread --bs=4k --size=4m --iodepth=32 --verify=crc32c --interrupts &&
  expect reverify "verify: 1024 blocks ok, 0 bad"
# io_uring_enter waiting for 16 completions at a time; the tail (fewer than 16 in flight) still ends.
run reverify-batched 0 --rw=randread --bs=4k --size=4m --iodepth=32 --verify=crc32c --interrupts --iodepth_batch_complete_min=16 &&
  expect reverify-batched "verify: 1024 blocks ok, 0 bad"
run batch-past-depth 64 --rw=read --bs=4k --size=4m --iodepth=8 --interrupts --iodepth_batch_complete_min=9 &&
  expect batch-past-depth "--iodepth_batch_complete_min=9: want 1 to 8"
printf 'X' | dd of="$img" bs=1 seek=$((3 * 4096 + 77)) conv=notrunc status=none
run detects-corruption 1 --rw=read --bs=4k --size=4m --verify=crc32c &&
  expect detects-corruption "verify: 1023 blocks ok, 1 bad" "bad block at offset 12288"
run json 0 --rw=randread --bs=4k --size=4m --iodepth=8 --runtime=1 --time_based --output-format=json &&
  expect json '"jobs": [' '"clat_ns": {' '"percentile": {' '"99.000000": '
run mq 0 --rw=randwrite --bs=8k --numjobs=2 --offset=8m --offset_increment=4m --size=2m --iodepth=8 --verify=crc32c &&
  expect mq "vio: queue=0 " "vio: queue=1 " "verify: 256 blocks ok, 0 bad"
run trim 0 --rw=trim --bs=64k --offset=16m --size=1m && run zero 0 --rw=zero --bs=64k --offset=17m --size=1m &&
  run zero-readback 0 --rw=read --bs=64k --offset=16m --size=2m --verify=pattern --verify_pattern=0 &&
  expect zero-readback "verify: 32 blocks ok, 0 bad"
before=$(md5sum <"$img")
for args in "--bogus=1" "--offset=1g" "--size=1000" "--offset=100" "--offset=40m --size=64m" "--bs=1000" "--rw=sideways"; do
  # shellcheck disable=SC2086
  run "badinput($args)" 64 --rw=write $args && expect "badinput($args)" "Error: "
done
[ "$(md5sum <"$img")" = "$before" ] && pass badinput-nothing-written || fail badinput-nothing-written "the image changed"

# An interrupted run says so (issue 13: Ctrl-C during write+verify exited 0 with
# "verify: 0 blocks ok, 0 bad"). A 1 GiB sparse image at 4k QD1 takes far longer
# than the wait for its first written block; the signal goes then.
big=$(mktemp /var/tmp/blk-host-intr-XXXXXX.img)
trap 'rm -f "$img" "$big"' EXIT
# interrupt <check> <signal> <wanted-exit> <ready-condition> <args...>: vio-fio on $big, stopped by <signal> once <ready-condition> holds
interrupt() {
  local c=$1 sig=$2 want=$3 ready=$4 rc i
  shift 4
  rm -f "$big" && truncate -s 1G "$big"
  "$fio" --filename="$big" "$@" >"$big.out" 2>"$big.err" &
  local pid=$!
  for ((i = 0; i < 600; i++)); do eval "$ready" && break; kill -0 $pid 2>/dev/null || break; sleep 0.05; done
  kill -"$sig" $pid 2>/dev/null
  wait $pid
  rc=$?
  out=$(cat "$big.out" "$big.err")
  rm -f "$big.out" "$big.err"
  [ "$rc" -eq "$want" ] && return 0
  fail "$c" "vio-fio $* stopped by SIG$sig exited $rc (want $want): $(echo "$out" | grep -v '^ *|' | tail -n 4 | tr '\n' ' ')"
  return 1
}
written='[ "$(stat -c %b "$big")" -gt 0 ]'
interrupt interrupted-verify INT 1 "$written" --rw=write --bs=4k --iodepth=1 --verify=crc32c &&
  expect interrupted-verify "interrupted: SIGINT stopped the job after" "the verify is incomplete" "Interrupted by SIGINT: the run was cut short."
interrupt interrupted-verify-json TERM 1 "$written" --rw=write --bs=4k --iodepth=1 --verify=crc32c --output-format=json &&
  expect interrupted-verify-json '"interrupted": true' '"stop_signal": "SIGTERM"' '"complete": false'
interrupt interrupted-read INT 0 'grep -q "Jobs:" "$big.err"' --rw=randread --bs=4k --runtime=60 --time_based --eta=always --output-format=json &&
  expect interrupted-read '"interrupted": true' '"stop_signal": "SIGINT"'
run not-interrupted 0 --rw=read --bs=64k --size=1m --output-format=json && expect not-interrupted '"interrupted": false'
rm -f "$big"

log=$bin/block-log
if "$log" "$img" format >/dev/null && "$log" "$img" append alpha beta >/dev/null && "$log" "$img" fill 100 2000 >/dev/null; then
  listing=$("$log" "$img" list | tr -d '\000')
  if grep -q "recovered 102 record(s)" <<<"$listing" && grep -q "^2	beta$" <<<"$listing"; then pass block-log
  else fail block-log "$(head -n 3 <<<"$listing" | tr '\n' ' ')"; fi
else
  fail block-log "block-log failed"
fi

bench=$("$(swift build -c release --show-bin-path)/blk-bench" --ops 20000 --dir /var/tmp 2>&1)
if [ $? -eq 0 ]; then pass blk-bench-no-allocations "$(grep -c 'allocs/op 0.0' <<<"$bench") loops at 0 allocations per request"
else fail blk-bench-no-allocations "$(tr '\n' ' ' <<<"$bench")"; fi

echo "blk-host: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
