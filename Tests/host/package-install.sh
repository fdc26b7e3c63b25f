#!/usr/bin/env bash
# The Debian package on this machine (tools/test; issue 16): installs it with
# dpkg -i, checks its files, group and unit, starts the unit as systemd would
# (the packaged list names nothing, so it must bind nothing), removes and
# purges it, and checks that no PCI function changed driver at any point
# (/sys/bus/pci/devices/*/driver before and after). Nothing here binds.
#   Tests/host/package-install.sh <swift-virtio_*.deb>
# Prints CHECK lines and closes with `package-install: N passed, M failed`.
set -uo pipefail
deb=${1:?usage: Tests/host/package-install.sh <swift-virtio_*.deb>}
passed=0 failed=0
pass() { echo "CHECK PASS $1${2:+: $2}"; passed=$((passed + 1)); }
fail() { echo "CHECK FAIL $1: $2"; failed=$((failed + 1)); }
finish() { echo "package-install: $passed passed, $failed failed"; ((failed == 0)); exit $?; }
[[ $(id -u) -eq 0 ]] || { fail package-root "dpkg -i needs root"; finish; }

drivers() { for d in /sys/bus/pci/devices/*; do echo "${d##*/}=$(basename "$(readlink "$d/driver")" 2>/dev/null)"; done; }
before=$(drivers)
same_drivers() { # same_drivers <check>
  local now
  now=$(drivers)
  if [[ $now == "$before" ]]; then pass "$1" "$(wc -l <<<"$now") PCI functions, none changed driver"
  else fail "$1" "drivers changed: $(diff <(echo "$before") <(echo "$now") | grep '^[<>]' | tr '\n' ' ')"; fi
}

out=$(dpkg -i "$deb" 2>&1) || out+=$(DEBIAN_FRONTEND=noninteractive apt-get -f install -y -qq 2>&1)
if dpkg-query -W -f='${Status}' swift-virtio 2>/dev/null | grep -q "install ok installed"; then
  pass package-install "$(dpkg-query -W -f='${Package} ${Version}' swift-virtio)"
else
  fail package-install "$(tail -n3 <<<"$out" | tr '\n' ' ')"
  finish
fi
same_drivers package-install-binds-nothing

missing=""
for f in /usr/bin/vio-bind /usr/bin/vio-fwd /usr/bin/vio-fio /lib/udev/rules.d/60-vio-vfio.rules \
  /lib/systemd/system/vio-bind.service /etc/vio/bind.conf /etc/security/limits.d/vio.conf \
  /usr/share/man/man1/vio-fwd.1.gz /usr/share/doc/swift-virtio/INSTALL.md; do
  [[ -e $f ]] || missing+=" $f"
done
[[ -z $missing ]] && pass package-files || fail package-files "missing:$missing"
getent group vio >/dev/null && pass package-group "$(getent group vio)" || fail package-group "postinst did not create group vio"
[[ -L /etc/systemd/system/multi-user.target.wants/vio-bind.service ]] && pass package-unit-enabled \
  || fail package-unit-enabled "no /etc/systemd/system/multi-user.target.wants/vio-bind.service"
for t in vio-bind vio-fwd vio-fio; do
  /usr/bin/$t --help >/dev/null 2>&1 || fail package-run-$t "/usr/bin/$t --help failed"
done
[[ $(/usr/bin/vio-bind udev-group 0) == VIO_LISTED=0 ]] && pass package-udev-group-empty-list "VIO_LISTED=0" \
  || fail package-udev-group-empty-list "$(/usr/bin/vio-bind udev-group 0 2>&1)"

# Start the unit: with the packaged list (which must name nothing) it binds nothing.
listed=$(grep -Ev '^[[:space:]]*(#|$)' /etc/vio/bind.conf)
if [[ -n $listed ]]; then
  fail package-unit-start "/etc/vio/bind.conf lists functions ($listed): not starting the unit on this machine"
elif [[ -d /run/systemd/system ]]; then
  systemctl start vio-bind.service && systemctl is-active -q vio-bind.service && pass package-unit-start "systemctl start: $(journalctl -u vio-bind -n1 -o cat 2>/dev/null)" \
    || fail package-unit-start "$(systemctl status vio-bind.service 2>&1 | tail -n3 | tr '\n' ' ')"
else
  # No systemd running (a container): the unit's ExecStart line itself.
  cmd=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/vio-bind.service)
  o=$($cmd 2>&1) && grep -q "no functions listed" <<<"$o" && pass package-unit-start "(no systemd) $cmd: $o" || fail package-unit-start "$cmd: $o"
fi
same_drivers package-unit-binds-nothing

out=$(dpkg -r swift-virtio 2>&1) && [[ ! -e /usr/bin/vio-fwd ]] && pass package-remove || fail package-remove "$(tail -n3 <<<"$out" | tr '\n' ' ')"
out=$(dpkg -P swift-virtio 2>&1) && [[ ! -e /etc/vio/bind.conf ]] && pass package-purge || fail package-purge "$(tail -n3 <<<"$out" | tr '\n' ' ')"
same_drivers package-removed-drivers-unchanged
finish
