# tools/demo's plan: the whole product in one boot. vio-bind binds two
# virtio-net functions (net1, net2) and one virtio-blk function (blk0);
# vio-fwd forwards host traffic net1 -> net2 (the host checks every frame);
# vio-fio writes with verification and measures 4 KiB random reads at QD1 and
# QD32; vio-bind restores the kernel drivers. The guest prints each tool's
# --json output on a `DEMO-JSON <name> {...}` line; tools/demo's report
# (tools/guestbed/demo.py) is made from those on the host.

NA=$(fwd_dev 52:54:00:12:34:61)
NB=$(fwd_dev 52:54:00:12:34:62)
BLK=$(find_virtio 0x1042 | head -n1)
MIB=1048576
echo "DEMO-DEVICES net1=$NA net2=$NB blk0=$BLK"

/bin/vio-bind status
if /bin/vio-bind bind $NA $NB $BLK > /tmp/bind.out 2>&1; then
  check_pass demo-bind "$(tr '\n' ' ' < /tmp/bind.out | cut -c1-240)"
else
  check_fail demo-bind "vio-bind bind exit $?: $(tail -n3 /tmp/bind.out | tr '\n' ' ')"
fi

# vio-fwd: host traffic in at net1, forwarded out of net2 (rate bounded by the host's sender).
fwd_start demo-fwd --port pci:$NA --port pci:$NB --mode io --wait poll
fwd_traffic demo-fwd p1 net1 net2 6000 3000 8
fwd_stop demo-fwd
echo "DEMO-JSON fwd $(cat /tmp/demo-fwd.json)"
# The send rate: 64-byte frames out of net2 for 3 s (the host only counts them).
timeout 60 /bin/vio-fwd --port pci:$NB --mode txonly --pkt-size 64 --duration 3 --stats-period 0 --json \
  >/tmp/demo-tx.json 2>/tmp/demo-tx.log && check_pass demo-txonly "$(grep 'total:' /tmp/demo-tx.log)" \
  || check_fail demo-txonly "$(tail -n3 /tmp/demo-tx.log | tr '\n' ' ')"
echo "DEMO-JSON txonly $(cat /tmp/demo-tx.json)"

# vio-fio: write + verify (the host checks the image too), then random reads.
demo_fio() {  # demo_fio <name> <args...>
  _n=$1; shift
  timeout 300 /bin/vio-fio --filename=pci:$BLK --name=$_n --output-format=json "$@" >/tmp/$_n.json 2>/tmp/$_n.err
  _rc=$?
  if [ $_rc -eq 0 ]; then check_pass demo-fio-$_n; else check_fail demo-fio-$_n "exit $_rc: $(tail -n3 /tmp/$_n.err | tr '\n' ' ')"; fi
  echo "DEMO-JSON fio-$_n $(tr '\n' ' ' < /tmp/$_n.json)"
}
demo_fio write-verify --rw=randwrite --bs=4k --size=8m --iodepth=16 --verify=crc32c --end_fsync=1
hostcheck blk-verify 0 $((8 * MIB)) 4096 demo
demo_fio randread-qd1 --rw=randread --bs=4k --size=8m --iodepth=1 --runtime=5 --time_based
demo_fio randread-qd32 --rw=randread --bs=4k --size=8m --iodepth=32 --runtime=5 --time_based

if /bin/vio-bind restore $NA $NB $BLK > /tmp/restore.out 2>&1; then
  check_pass demo-restore "$(tr '\n' ' ' < /tmp/restore.out | cut -c1-240)"
else
  check_fail demo-restore "vio-bind restore exit $?: $(tail -n3 /tmp/restore.out | tr '\n' ' ')"
fi
