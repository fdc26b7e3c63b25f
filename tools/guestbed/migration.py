"""Migration of the running guest to a second QEMU on this host
(Tests/guest/plans/migrate.sh).

    HOSTREQ migrate
        start a destination QEMU with the boot's command line plus
        `-S -incoming unix:<workdir>/migrate.sock` (its own QMP socket; its
        serial console feeds the same console reader), wait until it is
        `inmigrate`, QMP `migrate` on the source, poll `query-migrate` until
        `completed` (≤ 180 s); compare the guest's RAM in both (check
        host-migrate-ram), `cont` the destination, quit the source. From
        then on the boot's QEMU is the destination. The net devices' stream
        netdevs of the destination connect to the same frame servers when it
        starts; the servers send to the newest connection, so the guest plan
        keeps the host's traffic quiet while the move runs.

        Live (the guest runs while its RAM is copied) where QEMU's dirty
        tracking can be trusted; stop-and-copy (the source's vCPUs stopped
        first) under TCG before QEMU 9.0, whose fast bitmap sync clears
        dirty bits without re-arming the vCPUs' TLB write checks, so stores
        through a cached TLB entry after a sync are never sent (QEMU commit
        03bfc2188f, "physmem: Fix migration dirty bitmap coherency with TCG
        memory access", not in 7.2.x). GUESTBED_MIGRATE=live|stopped
        overrides. The guest sees the same either way: its clock stops with
        its vCPUs; the device state moves at the end in both.
    HOSTCHECK migrate-announce <device> <mac> <announcements>
        after poweroff: the device's host side received gratuitous RARPs
        (EtherType 0x8035, op 3, sender = <mac>) after the move: QEMU's own
        (one per announce round) plus one per announcement the guest's
        driver reported sending (<announcements>, from vio-fwd's JSON), and
        at least one of the driver's.
"""

import os
import subprocess
import time

from . import hostchecks
from .qmp import QMP, QMPError

REQUESTS = ("migrate",)
MIGRATE_MAX_S = 180.0


class Migration:
    def __init__(self):
        self.started_at = None      # time.monotonic() when `migrate` was sent
        self.done_at = None         # time.monotonic() when query-migrate said completed
        self.rounds = None          # QEMU's announce rounds after the move
        self.stats = None
        self.ram = None             # (equal, detail) from compare_ram
        self.mode = None            # "live" or "stopped" (move_mode)


def destination_command(cmd, workdir):
    """The boot's command line with its own QMP socket and -incoming."""
    qmp_sock = os.path.join(workdir, "qmp-dest.sock")
    mig_sock = os.path.join(workdir, "migrate.sock")
    for p in (qmp_sock, mig_sock):
        if os.path.exists(p):
            os.unlink(p)
    out = list(cmd)
    i = out.index("-qmp")
    out[i + 1] = f"unix:{qmp_sock},server=on,wait=off"
    # -S: the destination stays paused after the move until its RAM was
    # compared with the source's (compare_ram), then `cont`.
    out += ["-S", "-incoming", f"unix:{mig_sock}"]
    return out, qmp_sock, mig_sock


def migrate(cmd, workdir, qmp, start_console, note, state):
    """Moves the guest; returns (destination process, its QMP). Raises
    RuntimeError (with what went wrong) when the move fails."""
    dcmd, qmp_sock, mig_sock = destination_command(cmd, workdir)
    with open(os.path.join(workdir, "qemu-dest-cmd.sh"), "w") as f:
        f.write("#!/bin/sh\n" + " ".join(dcmd) + "\n")
    dest = subprocess.Popen(dcmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    start_console(dest.stdout)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(qmp_sock) and dest.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if dest.poll() is not None:
            raise RuntimeError(f"the destination QEMU exited at once with status {dest.returncode}")
        dq = QMP(qmp_sock, timeout=30, connect_timeout=30)
        st = dq.execute("query-status")
        if st.get("status") != "inmigrate":
            raise RuntimeError(f"the destination QEMU is {st.get('status')}, not inmigrate")
        params = qmp.execute("query-migrate-parameters")
        state.rounds = params.get("announce-rounds")
        state.mode = move_mode(cmd, qmp.execute("query-version"))
        t0 = time.monotonic()
        state.started_at = t0
        if state.mode == "stopped":
            qmp.execute("stop")
        qmp.execute("migrate", uri=f"unix:{mig_sock}")
        while True:
            info = qmp.execute("query-migrate")
            s = info.get("status")
            if s == "completed":
                break
            if s in ("failed", "cancelled"):
                raise RuntimeError(f"migration {s}: {info.get('error-desc', info)}")
            if time.monotonic() - t0 > MIGRATE_MAX_S:
                raise RuntimeError(f"migration not completed within {MIGRATE_MAX_S:.0f} s: {info}")
            time.sleep(0.1)
        state.done_at = time.monotonic()
        state.stats = info
        t_cmp = time.monotonic()
        state.ram = compare_ram(cmd, workdir, qmp, dq)
        dq.execute("cont")
        note(f"RAM compared in {time.monotonic() - t_cmp:.1f} s (the destination paused meanwhile): {state.ram[1]}")
        note(f"migrated ({state.mode}): {info.get('total-time')} ms in all, downtime {info.get('downtime')} ms, "
             f"{(info.get('ram') or {}).get('transferred', 0) >> 20} MiB; announce rounds {state.rounds}; "
             f"destination {dq.execute('query-status').get('status')}")
        try:
            qmp.execute("quit")
        except (OSError, QMPError, ConnectionError):
            pass
        qmp.close()
        return dest, dq
    except (OSError, QMPError, ConnectionError, ValueError) as e:
        dest.kill()
        _resume_source(qmp, state)
        raise RuntimeError(f"migration: {e}")
    except RuntimeError:
        dest.kill()
        _resume_source(qmp, state)
        raise


def _resume_source(qmp, state):
    """After a failed stop-and-copy move the guest goes on in the source."""
    if state.mode != "stopped":
        return
    try:
        qmp.execute("cont")
    except (OSError, QMPError, ConnectionError, ValueError):
        pass


def move_mode(cmd, version):
    """"live", or "stopped" where a live move would lose guest writes: TCG
    in a QEMU before 9.0 (see the module's docstring)."""
    forced = os.environ.get("GUESTBED_MIGRATE", "")
    if forced in ("live", "stopped"):
        return forced
    q = version.get("qemu", {})
    accel = cmd[cmd.index("-accel") + 1] if "-accel" in cmd else "tcg"
    tcg = accel.split(",")[0] == "tcg"
    return "stopped" if tcg and (q.get("major", 0), q.get("minor", 0)) < (9, 0) else "live"


def ram_ranges(mem_mib):
    """(guest physical address, bytes) of q35's RAM: below 4 GiB up to
    2.75 GiB (2 GiB of it when there is more), the rest from 4 GiB on."""
    size = mem_mib << 20
    low = size if size < 0xB0000000 else 0x80000000
    return [(0, low)] + ([(1 << 32, size - low)] if size > low else [])


def compare_ram(cmd, workdir, sq, dq):
    """The guest's RAM in the paused source (postmigrate) and in the
    destination, held paused by -S, after the move: a precopy move must
    leave them equal byte for byte, whatever the guest and its devices were
    doing. Returns (equal, what was found); differing pages are kept in
    <workdir>/ram-diff/ (source and destination, 16 at most)."""
    deadline = time.monotonic() + 60
    while dq.execute("query-status").get("status") == "inmigrate":
        if time.monotonic() > deadline:
            return False, "the destination was still inmigrate 60 s after the source completed"
        time.sleep(0.05)
    src, dst = os.path.join(workdir, "ram-src.bin"), os.path.join(workdir, "ram-dst.bin")
    keep = os.path.join(workdir, "ram-diff")
    pages, differ, bytes_differ = 0, [], 0
    try:
        for base, size in ram_ranges(int(cmd[cmd.index("-m") + 1])):
            sq.execute("pmemsave", val=base, size=size, filename=src)
            dq.execute("pmemsave", val=base, size=size, filename=dst)
            pages += size >> 12
            with open(src, "rb") as a, open(dst, "rb") as b:
                for off in range(0, size, 1 << 20):
                    x, y = a.read(1 << 20), b.read(1 << 20)
                    if x == y:
                        continue
                    for p in range(0, max(len(x), len(y)), 4096):
                        xp, yp = x[p:p + 4096], y[p:p + 4096]
                        if xp == yp:
                            continue
                        gpa = base + off + p
                        differ.append(gpa)
                        bytes_differ += sum(1 for i, j in zip(xp, yp) if i != j) + abs(len(xp) - len(yp))
                        if len(differ) <= 16:
                            os.makedirs(keep, exist_ok=True)
                            for side, data in (("src", xp), ("dst", yp)):
                                with open(os.path.join(keep, f"{gpa:#x}.{side}"), "wb") as f:
                                    f.write(data)
    finally:
        for f in (src, dst):
            if os.path.exists(f):
                os.unlink(f)
    if not differ:
        return True, f"all {pages} pages of guest RAM equal in the paused source and the destination"
    return False, (f"{len(differ)} of {pages} pages of guest RAM differ between the paused source and the "
                   f"destination ({bytes_differ} bytes; at " + ", ".join(f"{g:#x}" for g in differ[:8])
                   + f"; kept in {keep}): the move lost guest writes, so what fails in this guest after it "
                   "may be the move's doing, not the driver's (docs/TESTING.md, live migration)")


def _is_rarp_from(frame, mac):
    return (len(frame) >= 42 and frame[6:12] == mac and frame[12:14] == b"\x80\x35"
            and frame[20:22] == b"\x00\x03" and frame[22:28] == mac)


@hostchecks.hostcheck("migrate-announce", nargs=3)
def _migrate_announce(ctx, args):
    dev, mac_s, reported = args[0], args[1], int(args[2])
    state = getattr(ctx, "migration", None)
    if state is None or state.done_at is None or state.started_at is None:
        return False, "no migration completed in this boot"
    port = getattr(ctx, "net_ports", {}).get(dev)
    if port is None:
        return False, f"no host side for {dev}"
    mac = bytes.fromhex(mac_s.replace(":", ""))
    frames, times = list(port.frames), list(getattr(port, "times", []))
    # Nobody announces a MAC before a move: every RARP from it after `migrate` was sent counts.
    after = [f for f, t in zip(frames, times) if t >= state.started_at and _is_rarp_from(f, mac)]
    before = [f for f, t in zip(frames, times) if t < state.started_at and _is_rarp_from(f, mac)]
    rounds = state.rounds or 0
    if reported < 1:
        return False, f"the guest's driver reported no announcement on {dev}"
    if len(after) != rounds + reported:
        return False, (f"{len(after)} RARPs from {mac_s} on {dev} after the move: expected QEMU's {rounds} "
                       f"plus the driver's {reported}")
    return True, (f"{len(after)} RARPs from {mac_s} after the move ({rounds} from QEMU, {reported} from the driver), "
                  f"{len(before)} before")
