# The Debian package in a guest (tools/guest-test --deb, one boot): its files
# unpacked into the guest's root, its udev rule under the host's real
# systemd-udevd, vio-bind.service's Exec lines run as systemd would. It binds
# exactly the functions /etc/vio/bind.conf lists (net1, net2, blk0); a member
# of group vio (not root) forwards host traffic with vio-fwd and runs vio-fio
# write+verify on them (the host checks every frame and the disk image);
# stopping hands them back. net0 and net3 are not listed: net0 is never
# touched, and net3 bound by hand keeps a root-only /dev/vfio/N; a list that
# names a mounted disk is refused whole.
# (The maintainer scripts are not run here — busybox has no adduser/getent;
# the plan makes the group and users the way postinst would. tools/test
# installs the package for real on the host: Tests/host/package-install.sh.)

UNIT=/lib/systemd/system/vio-bind.service
CONF=/etc/vio/bind.conf
NA=$(fwd_dev 52:54:00:12:34:61)
NB=$(fwd_dev 52:54:00:12:34:62)
N0=$(fwd_dev 52:54:00:12:34:56)
N3=$(fwd_dev 52:54:00:12:34:63)
BLK=$(find_virtio 0x1042 | head -n1)
echo "PKG-DEVICES net1=$NA net2=$NB blk0=$BLK unlisted: net0=$N0 net3=$N3"
drivers() { for d in /sys/bus/pci/devices/*; do echo "$(basename $d)=$(pci_driver $(basename $d))"; done; }
drivers > /tmp/drivers.before
same_drivers() { drivers > /tmp/drivers.now; cmp -s /tmp/drivers.now /tmp/drivers.before; }

# unit_exec <Start|Stop>: the unit's Exec<kind>Pre, Exec<kind>, Exec<kind>Post
# lines in order, as systemd runs them ("-" prefix: a failure is ignored).
unit_exec() {
  for _k in Pre "" Post; do
    sed -n "s/^Exec$1$_k=//p" $UNIT
  done > /tmp/unit-$1.cmds
  while read -r _c; do
    _ign=0
    case $_c in -*) _ign=1; _c=${_c#-} ;; esac
    echo "PKG-EXEC $_c"
    sh -c "$_c" || [ $_ign = 1 ] || return 1
  done < /tmp/unit-$1.cmds
}

missing=""
for f in /usr/bin/vio-bind /usr/bin/vio-fwd /usr/bin/vio-fio /lib/udev/rules.d/60-vio-vfio.rules $UNIT $CONF \
  /etc/security/limits.d/vio.conf /usr/share/man/man1/vio-bind.1.gz /usr/share/doc/swift-virtio/INSTALL.md; do
  [ -e $f ] || missing="$missing $f"
done
[ -z "$missing" ] && check_pass pkg-files || check_fail pkg-files "not installed:$missing"

# What postinst does (addgroup --system vio), plus an operator in the group and
# one outside it (written directly: this busybox has no adduser/addgroup applets).
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'op:x:1000:1000::/tmp:/bin/sh' 'outsider:x:1001:1001::/tmp:/bin/sh' > /etc/passwd
printf '%s\n' 'root:x:0:' 'vio:x:999:op' 'op:x:1000:' 'outsider:x:1001:' > /etc/group
chmod 1777 /tmp
echo "PKG-USERS $(su op -c id); $(su outsider -c id)"
su op -c id | grep -q "(vio)" && check_pass pkg-user-in-group || check_fail pkg-user-in-group "$(su op -c id)"

# systemd-udevd with the package's rule (group vio must exist first: udev resolves names when it reads rules).
/lib/systemd/systemd-udevd --daemon > /tmp/udevd.log 2>&1
if wait_until 60 test -S /run/udev/control; then check_pass pkg-udevd "$(udevadm --version)"; else check_fail pkg-udevd "$(tail -n3 /tmp/udevd.log | tr '\n' ' ')"; fi

# The list as packaged names nothing: starting the unit binds nothing.
if unit_exec Start > /tmp/empty.out 2>&1 && grep -q "no functions listed" /tmp/empty.out && same_drivers; then
  check_pass pkg-empty-list-binds-nothing
else
  check_fail pkg-empty-list-binds-nothing "$(tail -n3 /tmp/empty.out | tr '\n' ' ')"
fi

# A list that names a disk in use (the scratch disk, mounted) and net1: the unit
# refuses, says why, and binds neither (all or none).
SCRATCH="" SDEV=""
for d in $(find_virtio 0x1042); do
  for b in /sys/bus/pci/devices/$d/virtio*/block/*; do
    [ -e "$b" ] && [ "$(cat $b/serial 2>/dev/null)" = vio-scratch ] && { SCRATCH=$d; SDEV=$(basename $b); }
  done
done
cp $CONF /tmp/bind.conf.packaged
mkdir -p /mnt/scratch
if [ -n "$SCRATCH" ] && mke2fs -q /dev/$SDEV >/dev/null 2>&1 && mount -t ext2 /dev/$SDEV /mnt/scratch; then
  printf '%s\n' $NA $SCRATCH >> $CONF
  if ! unit_exec Start > /tmp/inuse.out 2>&1 && grep -q "mounted: /dev/$SDEV.*take it off the list" /tmp/inuse.out && same_drivers; then
    check_pass pkg-in-use-refused-binds-none "$(grep -m1 refused /tmp/inuse.out | cut -c1-240)"
  else
    check_fail pkg-in-use-refused-binds-none "$(tail -n3 /tmp/inuse.out | tr '\n' ' ')"
  fi
  umount /mnt/scratch
else
  check_fail pkg-in-use-refused-binds-none "no mounted scratch disk (serial vio-scratch) to list"
fi
cp /tmp/bind.conf.packaged $CONF

for d in $NA $NB $BLK; do echo $d; done >> $CONF
if unit_exec Start > /tmp/start.out 2>&1; then check_pass pkg-unit-start "$(grep ': ' /tmp/start.out | tr '\n' ' ' | cut -c1-300)"
else check_fail pkg-unit-start "$(tail -n4 /tmp/start.out | tr '\n' ' ')"; fi
bad=""
for d in $NA $NB $BLK; do [ "$(pci_driver $d)" = vfio-pci ] || bad="$bad $d=$(pci_driver $d)"; done
[ -z "$bad" ] && check_pass pkg-listed-bound || check_fail pkg-listed-bound "not on vfio-pci:$bad"
bad=""
for d in $NA $NB $BLK; do
  _n=/dev/vfio/$(iommu_group $d)
  [ "$(stat -c '%G %a' $_n 2>&1)" = "vio 660" ] || bad="$bad $_n($(stat -c '%U:%G %a' $_n 2>&1))"
done
[ -z "$bad" ] && check_pass pkg-udev-vfio-group "listed groups' nodes: group vio, 0660" || check_fail pkg-udev-vfio-group "$bad"
[ "$(pci_driver $N0)" = "$(sed -n "s/^$N0=//p" /tmp/drivers.before)" ] && check_pass pkg-unlisted-untouched "$N0 on $(pci_driver $N0)" \
  || check_fail pkg-unlisted-untouched "$N0 moved to $(pci_driver $N0)"

# An unlisted function bound by hand: the rule leaves its node to root.
G3=$(iommu_group $N3)
if /usr/bin/vio-bind bind $N3 > /tmp/n3.out 2>&1 && udevadm settle; then
  _s=$(stat -c '%U:%G %a' /dev/vfio/$G3 2>&1)
  [ "$_s" = "root:root 600" ] && check_pass pkg-udev-unlisted-root-only "/dev/vfio/$G3 $_s" || check_fail pkg-udev-unlisted-root-only "/dev/vfio/$G3 is $_s"
else
  check_fail pkg-udev-unlisted-root-only "vio-bind bind $N3: $(tail -n2 /tmp/n3.out | tr '\n' ' ')"
fi
/usr/bin/vio-bind restore $N3 > /tmp/n3r.out 2>&1 || check_fail pkg-unlisted-restore "$(tail -n2 /tmp/n3r.out | tr '\n' ' ')"

MEMLOCK=$(awk '$1 == "@vio" && $3 == "memlock" { print $4 }' /etc/security/limits.d/vio.conf)
echo "PKG-MEMLOCK $MEMLOCK (what pam_limits gives a vio member's session; set here by hand: no PAM in the guest)"
FIO_ARGS="--filename=pci:$BLK --rw=randwrite --bs=4k --size=4m --iodepth=16 --verify=crc32c --end_fsync=1"

# Access missing: a clear message, no fallback, no trap.
# expect_refusal CHECK USER MEMLOCK PATTERN: vio-fio as USER with that locked-memory
# limit exits non-zero (not by a signal) with a message containing PATTERN.
expect_refusal() {
  su "$2" -c "ulimit -l $3; exec /usr/bin/vio-fio --name=$1 $FIO_ARGS" > /tmp/$1.out 2>&1
  _rc=$?
  if [ $_rc -ne 0 ] && [ $_rc -lt 128 ] && grep -q "$4" /tmp/$1.out; then
    check_pass "$1" "exit $_rc: $(grep -m1 "$4" /tmp/$1.out | cut -c1-240)"
  else
    check_fail "$1" "exit $_rc: $(tail -n2 /tmp/$1.out | tr '\n' ' ')"
  fi
}
expect_refusal pkg-nongroup-refused outsider "$MEMLOCK" "no permission to open /dev/vfio/"
expect_refusal pkg-memlock-needed op 64 "locked-memory limit"

# A vio member, the package's memlock: vio-fwd net1 -> net2 (the host checks every frame).
FWD_BIN=/usr/bin/vio-fwd FWD_USER=op FWD_USER_PRE="ulimit -l $MEMLOCK;"
fwd_start pkg-fwd --port pci:$NA --port pci:$NB --mode io --wait poll
_uid=$(awk '/^Uid:/ { print $2 }' /proc/$FWD_PID/status 2>/dev/null)
[ "$_uid" = 1000 ] && check_pass pkg-fwd-nonroot "vio-fwd runs as uid $_uid (op)" || check_fail pkg-fwd-nonroot "vio-fwd's uid is '$_uid', not op's 1000"
fwd_traffic pkg-fwd p1 net1 net2 3000 3000 4
fwd_stop pkg-fwd
FWD_USER=""
[ "$(grep -o '"path" *: *"vfio"' /tmp/pkg-fwd.json | wc -l)" -eq 2 ] && check_pass pkg-fwd-vfio "both ports on the userspace path" \
  || check_fail pkg-fwd-vfio "not both ports on VFIO: $(cut -c1-300 /tmp/pkg-fwd.json)"

# ... and vio-fio write + CRC-32C verify (the host checks the image).
if su op -c "ulimit -l $MEMLOCK; exec /usr/bin/vio-fio --name=op --output-format=json $FIO_ARGS" > /tmp/op-fio.json 2>/tmp/op-fio.err; then
  check_pass pkg-fio-nonroot "$(grep -o '"blocks_ok" *: *[0-9]*' /tmp/op-fio.json)"
else
  check_fail pkg-fio-nonroot "exit $?: $(tail -n3 /tmp/op-fio.err | tr '\n' ' ')"
fi
grep -q '"backend" *: *"virtio"' /tmp/op-fio.json && check_pass pkg-fio-vfio || check_fail pkg-fio-vfio "not on the userspace path: $(grep -o '"fallback"[^}]*' /tmp/op-fio.json | head -c 240)"
hostcheck blk-verify 0 $((4 * 1048576)) 4096 pkg

# Stop: the listed functions go back; everything is as it was at boot.
if unit_exec Stop > /tmp/stop.out 2>&1; then check_pass pkg-unit-stop "$(grep ': ' /tmp/stop.out | tr '\n' ' ' | cut -c1-300)"
else check_fail pkg-unit-stop "$(tail -n4 /tmp/stop.out | tr '\n' ' ')"; fi
if same_drivers; then check_pass pkg-drivers-restored
else check_fail pkg-drivers-restored "$(diff /tmp/drivers.before /tmp/drivers.now | grep '^[-+]0' | tr '\n' ' ')"; fi
udevadm control --exit 2>/dev/null || true
