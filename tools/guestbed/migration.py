"""Live migration of the running guest to a second QEMU on this host
(Tests/guest/plans/migrate.sh).

    HOSTREQ migrate
        start a destination QEMU with the boot's command line plus
        `-incoming unix:<workdir>/migrate.sock` (its own QMP socket; its
        serial console feeds the same console reader), wait until it is
        `inmigrate`, QMP `migrate` on the source, poll `query-migrate` until
        `completed` (≤ 180 s), quit the source. From then on the boot's QEMU
        is the destination. The net devices' stream netdevs of the
        destination connect to the same frame servers when it starts; the
        servers send to the newest connection, so the guest plan keeps the
        host's traffic quiet while the move runs.
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
    out += ["-incoming", f"unix:{mig_sock}"]
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
        t0 = time.monotonic()
        state.started_at = t0
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
        note(f"migrated: {info.get('total-time')} ms in all, downtime {info.get('downtime')} ms, "
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
        raise RuntimeError(f"migration: {e}")
    except RuntimeError:
        dest.kill()
        raise


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
