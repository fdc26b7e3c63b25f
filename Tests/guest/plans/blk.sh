# vio-fio / BlockIO in the guest (issue 4), included by plan.default_plan_body
# before vio-bind's checks. Expects $BLK (blk0, disk.img, 64 MiB) from the
# default plan; finds the drives tools/guestbed/blktest.py adds by serial:
# vio-faulty (blkdebug: EIO at 1 MiB for reads, 2 MiB for writes;
# discard=unmap) and vio-ro (read-only). Every vio-fio run has a time limit;
# what was written is checked again by the host in the images after poweroff.
#
# disk.img layout: 0-1M integrity+flush, 4-8M random writes, 8-12M 1 MiB
# blocks, 12M corruption, 24M/26M multi-queue, 40M bad input (must stay
# untouched). The perf comparison runs in the plain split variant only.

MIB=1048576

blk_kdev() { ls /sys/bus/pci/devices/$1/virtio*/block/ 2>/dev/null | head -n1; }
has_kdev() { [ -n "$(blk_kdev $1)" ]; }

# fio_run <check> <wanted-exit> <vio-fio args...>: output in /tmp/<check>.out;
# a different exit status fails <check> (with the output's last lines).
fio_run() {
  _c=$1; _want=$2; shift 2
  timeout 300 /bin/vio-fio "$@" > /tmp/$_c.out 2>&1
  _rc=$?
  echo "GUESTBED $_c: vio-fio $* -> exit $_rc"
  grep -E '^ *(read|write|trim|vio|verify|error|fatal|note): ' /tmp/$_c.out | head -n 12
  [ $_rc -eq $_want ] && return 0
  check_fail $_c "vio-fio $* exited $_rc (want $_want): $(grep -v '^ *|' /tmp/$_c.out | tail -n 4 | tr '\n' ' ')"
  return 1
}
has() { grep -q -- "$2" /tmp/$1.out; }
# vio_field <check> <queue> <key>: a number from the job's "vio:" line
vio_field() { grep "vio: queue=$2 " /tmp/$1.out | sed -n "s/.* $3=\([0-9]*\).*/\1/p" | head -n1; }
expect() {  # expect <check> <grep-pattern>... : pass when the output has every pattern
  _c=$1; shift
  for _p in "$@"; do
    has $_c "$_p" || { check_fail $_c "output lacks '$_p': $(grep -v '^ *|' /tmp/$_c.out | tail -n 4 | tr '\n' ' ')"; return 1; }
  done
  check_pass $_c
}

FAULTY=$(blk_by_serial vio-faulty)
RO=$(blk_by_serial vio-ro)
[ -n "$FAULTY" ] || check_fail blk-faulty-drive "no virtio-blk function with serial vio-faulty"
[ -n "$RO" ] || check_fail blk-ro-drive "no virtio-blk function with serial vio-ro"
echo "GUESTBED blk: disk $BLK, faulty ${FAULTY:-none}, read-only ${RO:-none}, queues $GUESTBED_BLK_QUEUES"

# snapshot <label> <offset> <length>: the host copies that range of disk.img now
# (with QEMU's counters) and acknowledges by growing vio-faulty by a sector;
# wait for that, so the snapshot sits exactly here in the sequence.
FDEV=$(blk_kdev "$FAULTY")
snaps=0
sectors_are() { [ "$(cat /sys/block/$1/size 2>/dev/null)" = "$2" ]; }
snapshot() {
  snaps=$((snaps + 1))
  hostreq blk-snapshot "$@"
  wait_until 60 sectors_are "$FDEV" $((8 * 2048 + snaps)) ||
    check_fail blk-snapshot-$1 "the host did not acknowledge (vio-faulty has $(cat /sys/block/$FDEV/size 2>/dev/null) sectors)"
}

snapshot flush-before 0 $MIB
bind_vfio $BLK || check_fail blk-bind-vfio "$BLK is bound to $(pci_driver $BLK), not vfio-pci"
T=pci:$BLK

# 1. Data integrity through VFIO, acknowledged by a flush: write + read back
#    + verify; the host snapshots the range once the flush completed (and
#    checks QEMU counted the flush), and checks the image again after poweroff.
fio_run blk-fio-write-verify 0 --filename=$T --name=integrity --rw=write --bs=4k --size=1m --iodepth=8 \
  --verify=crc32c --end_fsync=1 &&
  expect blk-fio-write-verify "verify: 256 blocks ok, 0 bad" "flushes=1" "completed_ok=256"
snapshot flush-after 0 $MIB
hostcheck blk-flush flush-before flush-after 4096 acked
hostcheck blk-verify 0 $MIB 4096 integrity
# A later job re-verifies what the first one wrote.
fio_run blk-fio-reverify 0 --filename=$T --rw=read --bs=4k --size=1m --iodepth=32 --verify=crc32c &&
  expect blk-fio-reverify "verify: 256 blocks ok, 0 bad"

# 2. Random writes sleeping on MSI-X; 1 MiB blocks in hybrid mode.
fio_run blk-fio-randwrite-irq 0 --filename=$T --rw=randwrite --bs=16k --offset=4m --size=4m --iodepth=16 \
  --verify=crc32c --interrupts && {
  irq=$(vio_field blk-fio-randwrite-irq 0 interrupts)
  if [ "${irq:-0}" -gt 0 ]; then expect blk-fio-randwrite-irq "verify: 256 blocks ok, 0 bad"
  else check_fail blk-fio-randwrite-irq "no MSI-X interrupt taken in --interrupts mode"; fi
}
hostcheck blk-verify $((4 * MIB)) $((4 * MIB)) 16384 randwrite
fio_run blk-fio-bigblocks 0 --filename=$T --rw=write --bs=1m --offset=8m --size=4m --iodepth=2 --verify=crc32c \
  --hybrid=200 && expect blk-fio-bigblocks "verify: 4 blocks ok, 0 bad"
hostcheck blk-verify $((8 * MIB)) $((4 * MIB)) $MIB bigblocks

# 3. A block changed behind vio-fio's back (through the kernel) is reported.
fio_run blk-fio-victim 0 --filename=$T --rw=write --bs=4k --offset=12m --size=256k --verify=crc32c --do_verify=0
if bind_kernel $BLK && wait_until 60 has_kdev $BLK; then
  printf 'CORRUPTED' | dd of=/dev/$(blk_kdev $BLK) bs=1 seek=$((12 * MIB + 8192 + 100)) conv=notrunc,fsync 2>/dev/null
  bind_vfio $BLK
  fio_run blk-fio-detects-corruption 1 --filename=$T --rw=read --bs=4k --offset=12m --size=256k --verify=crc32c &&
    expect blk-fio-detects-corruption "verify: 63 blocks ok, 1 bad" "bad block at offset 12591104"
else
  check_fail blk-fio-detects-corruption "could not hand $BLK back to virtio_blk to change a block"
  bind_vfio $BLK
fi

# 4. Multi-queue: two jobs, each on its own queue.
if [ "${GUESTBED_BLK_QUEUES:-1}" -ge 2 ]; then
  fio_run blk-fio-mq 0 --filename=$T --numjobs=2 --rw=randwrite --bs=4k --offset=24m --offset_increment=2m --size=1m \
    --iodepth=8 --verify=crc32c && {
    r0=$(vio_field blk-fio-mq 0 requests)
    r1=$(vio_field blk-fio-mq 1 requests)
    if [ "${r0:-0}" -ge 512 ] && [ "${r1:-0}" -ge 512 ]; then
      echo "CHECK PASS blk-fio-mq: queue 0 took $r0 requests, queue 1 took $r1"
    else
      check_fail blk-fio-mq "queue 0 took ${r0:-0} requests, queue 1 ${r1:-0} (want 512 each)"
    fi
  }
  hostcheck blk-verify $((24 * MIB)) $MIB 4096 mq-job0
  hostcheck blk-verify $((26 * MIB)) $MIB 4096 mq-job1
fi

# 5. Bad input: a usage message, exit 64, nothing written (the host checks 40 MiB..41 MiB).
for case in "bogus:--bogus=1" "past-end:--offset=1g" "unaligned-size:--offset=40m --size=1000" \
  "unaligned-offset:--offset=41943140" "too-long:--offset=40m --size=64m" "bad-bs:--offset=40m --bs=1000" \
  "bad-target:--offset=40m --filename=pci:zz:00.0"; do
  name=${case%%:*}
  # shellcheck disable=SC2086
  fio_run blk-fio-badinput-$name 64 --filename=$T --rw=write --bs=4k ${case#*:} && expect blk-fio-badinput-$name "Error: "
done
hostcheck blk-pattern $((40 * 2048)) 2048 badinput

# 6. Injected I/O errors (blkdebug): those requests fail, the rest complete, exit 1 with a report.
if [ -n "$FAULTY" ] && bind_vfio $FAULTY; then
  F=pci:$FAULTY
  fio_run blk-fio-faulty-read 1 --filename=$F --rw=randread --bs=64k --size=4m --iodepth=4 &&
    expect blk-fio-faulty-read "error: read of 65536 bytes at offset 1048576 (0x100000) failed: I/O error" "completed_ok=63"
  fio_run blk-fio-faulty-write 1 --filename=$F --rw=randwrite --bs=64k --offset=2m --size=1m --iodepth=4 &&
    expect blk-fio-faulty-write "error: write of 65536 bytes at offset 2097152 (0x200000) failed: I/O error" "completed_ok=15"
  # 7. Discard and write-zeroes read back as zeroes (the drive has discard=unmap).
  fio_run blk-fio-trim 0 --filename=$F --rw=trim --bs=64k --offset=4m --size=1m && expect blk-fio-trim "discards=16"
  fio_run blk-fio-zero 0 --filename=$F --rw=zero --bs=64k --offset=5m --size=1m && expect blk-fio-zero "write_zeroes=16"
  fio_run blk-fio-zero-readback 0 --filename=$F --rw=read --bs=64k --offset=4m --size=2m --verify=pattern --verify_pattern=0x00 &&
    expect blk-fio-zero-readback "verify: 32 blocks ok, 0 bad"
  # Capacity change: the host grows the drive (QMP block_resize) while vio-fio
  # runs; vio-fio notices through the config-change interrupt, keeps going, and
  # SIGINT ends it with a report (exit 0). A new run then reads past the old end.
  timeout 120 /bin/vio-fio --filename=$F --rw=randread --bs=4k --offset=6m --size=1m --runtime=100 --time_based \
    --eta=always > /tmp/blk-fio-resize.out 2>&1 &
  fio_pid=$!
  if wait_until 60 grep -q "Jobs:" /tmp/blk-fio-resize.out; then
    hostreq qmp block_resize '{"node-name":"faulty","size":16777216}'
    wait_until 60 grep -q "changed capacity" /tmp/blk-fio-resize.out
  fi
  kill -INT $fio_pid 2>/dev/null
  wait $fio_pid
  rc=$?
  tr '\r' '\n' < /tmp/blk-fio-resize.out | grep -E "changed capacity|vio:|fatal" | head -n 4
  if [ $rc -eq 0 ] && grep -q "changed capacity: now 16777216 bytes (config change interrupt" /tmp/blk-fio-resize.out; then
    check_pass blk-fio-resize
  else
    check_fail blk-fio-resize "vio-fio exit $rc; $(tr '\r' '\n' < /tmp/blk-fio-resize.out | grep -v '^ *|' | tail -n 3 | tr '\n' ' ')"
  fi
  fio_run blk-fio-after-resize 0 --filename=$F --rw=read --bs=64k --offset=12m --size=1m && expect blk-fio-after-resize "completed_ok=16"
  # The example storage app (Examples/BlockLog) over VFIO: a log at the start of
  # the drive (far from the faults), appended in two runs; the second open
  # recovers the first run's records. The host parses the log in the image.
  if [ -x /bin/block-log ]; then
    if timeout 120 block-log $F format > /tmp/blk-log.out 2>&1 && timeout 120 block-log $F append one two three >> /tmp/blk-log.out 2>&1 &&
      timeout 120 block-log $F append four five >> /tmp/blk-log.out 2>&1 && timeout 120 block-log $F list >> /tmp/blk-log.out 2>&1; then
      cat /tmp/blk-log.out
      if grep -q "last sequence 5" /tmp/blk-log.out && grep -q "recovered 5 record(s)" /tmp/blk-log.out && grep -q "^5	five$" /tmp/blk-log.out; then
        check_pass blk-example-log
      else
        check_fail blk-example-log "$(tr '\n' ' ' < /tmp/blk-log.out)"
      fi
      hostcheck blk-log faulty 5 example
    else
      check_fail blk-example-log "block-log failed: $(tr '\n' ' ' < /tmp/blk-log.out)"
    fi
  else
    check_fail blk-example-log "/bin/block-log is not in the initramfs"
  fi
  hostcheck blk-zero $((4 * MIB)) $((2 * MIB)) faulty discard-zeroes
  hostcheck blk-drive-pattern faulty $((6 * 2048)) 4096 after-zeroes
else
  check_fail blk-fio-faulty "the vio-faulty drive could not be bound to vfio-pci"
fi

# 8. A read-only drive: writes refused before anything is submitted; reads work.
if [ -n "$RO" ] && bind_vfio $RO; then
  fio_run blk-fio-readonly-write 1 --filename=pci:$RO --rw=write --bs=4k --size=1m &&
    expect blk-fio-readonly-write "is read-only (VIRTIO_BLK_F_RO)" "nothing was submitted"
  fio_run blk-fio-readonly-read 0 --filename=pci:$RO --rw=read --bs=4k --size=1m && expect blk-fio-readonly-read "completed_ok=256"
  hostcheck blk-drive-pattern ro 0 $((4 * 2048)) readonly
else
  check_fail blk-fio-readonly "the vio-ro drive could not be bound to vfio-pci"
fi

# 9. Side by side (plain split variant): 4 KiB random reads at QD1 and QD32 over
#    VFIO, through the kernel's virtio_blk (vio-fio on io_uring), and real fio.
perf_line() {  # perf_line <check> <what> <iops> <p99-ns>
  if [ -n "$3" ] && [ -n "$4" ]; then echo "CHECK PASS $1: $2 iops=$3 p99_ns=$4"
  else check_fail $1 "no IOPS/p99 in the output of $2"; fi
}
if [ "$GUESTBED_VARIANT" = split ]; then
  for qd in 1 32; do
    for mode in polling interrupts; do
      c=blk-perf-vfio-qd$qd; [ $mode = interrupts ] && c=blk-perf-vfio-irq-qd$qd
      fio_run $c 0 --filename=$T --rw=randread --bs=4k --iodepth=$qd --runtime=3 --time_based --offset=32m --size=8m \
        --output-format=json $([ $mode = interrupts ] && echo --interrupts) &&
        perf_line $c "vio-fio VFIO $mode" "$(sed -n 's/.*"read": {[^}]*"iops": \([0-9.]*\).*/\1/p' /tmp/$c.out)" \
          "$(sed -n 's/.*"99.000000": \([0-9]*\).*/\1/p' /tmp/$c.out)"
    done
  done
  if bind_kernel $BLK && wait_until 60 has_kdev $BLK; then
    D=/dev/$(blk_kdev $BLK)
    for qd in 1 32; do
      c=blk-perf-kernel-qd$qd
      fio_run $c 0 --filename=$D --rw=randread --bs=4k --iodepth=$qd --runtime=3 --time_based --offset=32m --size=8m \
        --output-format=json --interrupts &&
        perf_line $c "vio-fio io_uring on $D" "$(sed -n 's/.*"read": {[^}]*"iops": \([0-9.]*\).*/\1/p' /tmp/$c.out)" \
          "$(sed -n 's/.*"99.000000": \([0-9]*\).*/\1/p' /tmp/$c.out)"
      if [ -x /usr/bin/fio ] || [ -x /bin/fio ]; then
        c=blk-perf-fio-qd$qd
        # Batched like vio-fio (one io_uring_enter per batch), so the two kernel figures compare.
        timeout 120 fio --name=k --filename=$D --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=$qd \
          --iodepth_batch_submit=$qd --iodepth_batch_complete_min=1 --iodepth_batch_complete_max=$qd \
          --runtime=3 --time_based --offset=32m --size=8m --output-format=json > /tmp/$c.out 2>&1
        perf_line $c "fio io_uring on $D" "$(grep -m1 '"iops" :' /tmp/$c.out | sed 's/[^0-9.]//g')" \
          "$(grep -m1 '"99.000000" :' /tmp/$c.out | sed 's/.*: *\([0-9]*\).*/\1/')"
      else
        echo "GUESTBED blk-perf: no fio in the guest (install the fio package on the host)"
      fi
    done
  else
    check_fail blk-perf-kernel "could not hand $BLK back to virtio_blk"
  fi
fi

# Back to the kernel's driver for the checks that follow.
for d in $BLK $FAULTY $RO; do bind_kernel $d || check_fail blk-handback "$d stays on $(pci_driver $d)"; done
