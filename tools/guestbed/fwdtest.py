"""Host side of the guest's packet-forwarder test (vio-fwd between two extra
virtio-net devices, net1 -> net2; see Tests/guest/plans/net-forward.sh).

The guest drives it with two host requests and one host check:

    HOSTREQ net-traffic <run> <phase> <json>
        start sending test frames (traffic.py) into one device's host side
        in the background; json: {"from": "net1", "to": "net2", "count": N,
        "rate": R, "flows": F, "jumbo": true|false}; "targets": [{"mac":
        "aa:..", "vlan": V, "filtered": true}, ...] gives each flow its own
        destination MAC and 802.1Q tag (one flow per target), and says which
        flows the receiving device must drop (receive filters)
    HOSTREQ net-traffic-wait <run> <phase>
        wait (bounded) until the phase's frames arrived on the "to" side, or
        none came for a while; the guest's following lines wait for this
    HOSTCHECK net-traffic <run>
        after poweroff: every phase of <run> arrived whole, once, in per-flow
        order, or each missing frame is one vio-fwd counted as dropped: the
        guest prints vio-fwd's --json summary as `VIOFWD-JSON <run> {...}`
    HOSTCHECK net-filter <run>
        after poweroff: the frames of flows marked "filtered" never arrived,
        every other frame did (intact, once, in order, none dropped), and
        vio-fwd's receive count on port A is exactly the latter: the device
        dropped the filtered frames, not vio-fwd

The devices' host sides (FrameServer / TapPort, netserver.py) come from
boot.py, keyed by device id.
"""

import json
import random
import threading
import time

from . import hostchecks
from . import traffic

# Extra virtio-net devices of every boot: id, MAC (how the guest tells them
# apart), QEMU properties on top of the variant's.
# "legacy": a legacy-only device (disable-modern=on), none of the variant's
# properties, single-queue host side: the userspace path cannot take it and
# vio-fwd falls back to the kernel's driver (Tests/guest/plans/fallback-legacy.sh).
DEVICES = [
    ("net1", "52:54:00:12:34:61", ["host_mtu=9000"]),
    ("net2", "52:54:00:12:34:62", ["host_mtu=9000"]),
    ("net3", "52:54:00:12:34:63", ["legacy"]),
]
KINDS = ("net-traffic", "net-traffic-wait")
WAIT_IDLE_S = 8.0
WAIT_MAX_S = 180.0


class Phase:
    def __init__(self, run, name, spec, ports):
        self.run = run
        self.name = name
        self.src = spec["from"]
        self.dst = spec["to"]
        if self.src not in ports or self.dst not in ports:
            raise ValueError(f"net-traffic: unknown device in {spec} (have {', '.join(sorted(ports))})")
        self.run_id = random.randrange(1, 2**31)
        self.targets = [traffic.Target.from_json(t) for t in spec.get("targets", [])]
        self.frames = traffic.plan(self.run_id, int(spec.get("count", 1000)), int(spec.get("flows", 4)),
                                   bool(spec.get("jumbo", False)), self.targets or None)
        self.filtered = {f for f, t in enumerate(self.targets) if t.filtered}
        self.rate = float(spec.get("rate", 1000))
        # vio-fwd --tag-rx with RSS: {"table": [...]}; frames come back with the source MAC rewritten.
        self.rss = spec.get("rss")
        self.out = ports[self.src]
        self.inp = ports[self.dst]
        self.error = None
        self.sent = 0
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._send, daemon=True, name=f"traffic-{run}-{name}")
        self.thread.start()

    def _send(self):
        try:
            pacer = traffic.Pacer(self.rate)
            for _, _, fr in self.frames:
                self.out.send(fr)
                self.sent += 1
                pacer.wait()
        except OSError as e:
            self.error = f"sending: {e}"

    def verdict(self):
        v = traffic.Verdict(self.run_id, self.frames, self.filtered)
        for fr in self.inp.received(lambda f: True):
            v.feed(untag(fr) if self.rss else fr)
        return v

    def rss_problems(self):
        """(problems, summary): every tagged frame of a flow arrived on the queue
        the indirection table names for the flow's Toeplitz hash (UDPv4:
        addresses and ports, the default key) and carries that hash."""
        table = self.rss["table"]
        got = {}                                    # flow -> {(tag byte, queue, hash)}
        for fr in self.inp.received(lambda f: True):
            if len(fr) < 38:
                continue
            p = traffic.parse(untag(fr), self.run_id)
            if p is None:
                continue
            got.setdefault(p[0], set()).add((fr[6], fr[7], int.from_bytes(fr[8:12], "big")))
        problems, queues = [], {}
        for flow in sorted(got):
            sample = next(f for fl, _, f in self.frames if fl == flow)
            h = toeplitz(RSS_KEY, sample[26:38])
            want = (0x02, table[h & (len(table) - 1)], h)
            if got[flow] != {want}:
                problems.append(f"flow {flow}: tags {sorted(got[flow])}, want queue {want[1]} hash {h:#010x}")
            queues[flow] = want[1]
        flows = len({f for f, _, _ in self.frames})
        if len(got) < flows:
            problems.append(f"only {len(got)} of {flows} flows came back tagged")
        return problems, queues

    def arrival_rate(self):
        """Frames per second between the first and the last of this phase's
        frames to arrive (the host's view of the forwarding rate), or None."""
        times = [t for fr, t in zip(list(self.inp.frames), list(getattr(self.inp, "times", [])))
                 if traffic.parse(fr, self.run_id) is not None]
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def wait(self):
        """Until every expected frame arrived (those of filtered flows are
        not waited for), or — once some have — none came for WAIT_IDLE_S
        after the sender finished (at most WAIT_MAX_S)."""
        self.thread.join(WAIT_MAX_S)
        deadline = time.monotonic() + WAIT_MAX_S
        last_count, last_change = 0, time.monotonic()
        want = len(self.verdict().expected)
        while time.monotonic() < deadline:
            n = self.verdict().received
            if n >= want:
                return n
            if n != last_count:
                last_count, last_change = n, time.monotonic()
            elif n > 0 and time.monotonic() - last_change > WAIT_IDLE_S:
                return n
            time.sleep(0.5)
        return last_count


# The key vio-fwd --rss uses by default (the RSS verification suite's, 40 bytes).
RSS_KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")


def toeplitz(key, data):
    """The Toeplitz hash (virtio §5.1.6.4.3.1): for each set input bit i, the
    32 key bits starting at bit i are XORed in (zero bits past the key's end)."""
    k = int.from_bytes(key, "big") << (len(data) * 8)     # room to slide past the end
    top = len(key) * 8 + len(data) * 8
    h = 0
    for i in range(len(data) * 8):
        if data[i // 8] & (0x80 >> (i % 8)):
            h ^= (k >> (top - 32 - i)) & 0xFFFFFFFF
    return h


def untag(fr):
    """A frame vio-fwd --tag-rx rewrote, with the test's source MAC back."""
    return fr[:6] + traffic.SRC_MAC + fr[12:]


class Runs:
    """Every phase the guest started in one boot, by run."""

    def __init__(self):
        self.phases = {}        # run -> [Phase]

    def handle(self, kind, args, ports, note):
        """Acts on a HOSTREQ; returns an error text or None."""
        try:
            if kind == "net-traffic":
                run, name, spec = args[0], args[1], json.loads(args[2])
                p = Phase(run, name, spec, ports)
                self.phases.setdefault(run, []).append(p)
                note(f"net-traffic {run}/{name}: sending {len(p.frames)} frames {p.src} -> {p.dst} at {p.rate:g}/s "
                     f"(run id {p.run_id})")
                return None
            if kind == "net-traffic-wait":
                run, name = args[0], args[1]
                p = next((p for p in self.phases.get(run, []) if p.name == name), None)
                if p is None:
                    return f"net-traffic-wait: no phase {run}/{name} was started"
                n = p.wait()
                note(f"net-traffic {run}/{name}: {n}/{len(p.verdict().expected)} expected frames arrived on {p.dst} "
                     f"({time.monotonic() - p.t0:.1f} s after the start)")
                return None
        except (IndexError, ValueError, KeyError) as e:
            return f"HOSTREQ {kind} {' '.join(args)}: {e}"
        return f"unknown HOSTREQ kind {kind!r}"


def _fwd_summary(console_lines, run):
    tag = f"VIOFWD-JSON {run} "
    for line in reversed(console_lines):
        i = line.find(tag)
        if i >= 0:
            return json.loads(line[i + len(tag):])
    return None


def _accounting_problems(fwd):
    """Issue 13: on the kernel path (AF_PACKET, the fallback variants) every
    frame vio-fwd took in on one port of an io pair was sent on the other or
    counted dropped there: rx_packets(A) == tx_packets(B) + tx_dropped(B), both
    directions. (The kernel path once counted 70 frames sent that never left.)"""
    ports = fwd.get("ports") or []
    if fwd.get("mode") not in ("io", "macswap") or len(ports) != 2:
        return []
    if not all(p.get("path") == "kernel" for p in ports):
        return []
    out = []
    for a, b in ((0, 1), (1, 0)):
        took, sent, dropped = ports[a].get("rx_packets", 0), ports[b].get("tx_packets", 0), ports[b].get("tx_dropped", 0)
        if took != sent + dropped:
            out.append(f"vio-fwd took in {took} frames on port {a} but sent {sent} and counted {dropped} dropped on port {b}: "
                       f"{took - sent - dropped} frame(s) neither delivered nor counted")
    return out


def _run_phases_and_summary(ctx, run):
    """The traffic phases the host sent for `run` and vio-fwd's JSON summary of
    it, or a reason the check cannot start: (phases, summary, why)."""
    runs = getattr(ctx, "traffic_runs", None)
    phases = runs.phases.get(run, []) if runs else []
    if not phases:
        return phases, None, f"no traffic was sent for run {run} (no HOSTREQ net-traffic {run} ...)"
    try:
        fwd = _fwd_summary(ctx.console_lines, run)
    except ValueError as e:
        return phases, None, f"VIOFWD-JSON {run}: not JSON ({e})"
    if fwd is None:
        return phases, None, f"the guest printed no `VIOFWD-JSON {run} ...` line (vio-fwd's --json summary)"
    return phases, fwd, None


@hostchecks.hostcheck("net-traffic", nargs=1)
def _net_traffic(ctx, args):
    run = args[0]
    phases, fwd, why = _run_phases_and_summary(ctx, run)
    if why:
        return False, why
    drops = int(fwd.get("dropped", 0))
    sent = missing = received = 0
    problems = []
    for p in phases:
        if p.error:
            problems.append(f"{p.name}: {p.error}")
        v = p.verdict()
        ok, text = v.summary(explained_losses=drops)
        sent += len(p.frames)
        received += v.received
        missing += len(v.missing)
        if not ok:
            problems.append(f"{p.name}: {text}")
    if missing > drops:
        problems.append(f"{missing} frames missing in all, vio-fwd counted {drops} dropped")
        host = sum(getattr(ctx.net_ports.get(p.dst), "capture_drops", 0) for p in phases[:1])
        if host:
            problems.append(f"the host's capture socket on {phases[0].dst} overflowed {host} time(s): a test bed loss, not vio-fwd's")
        src = ctx.net_ports.get(phases[0].src)
        tap = src.tx_dropped() if hasattr(src, "tx_dropped") else 0
        if tap:
            problems.append(f"the host's tap for {phases[0].src} dropped {tap} frame(s) before QEMU read them: a test bed loss, not vio-fwd's")
    problems += _accounting_problems(fwd)
    # Multiqueue: every queue of the receiving port carried some of the flows.
    queues = (fwd.get("ports") or [{}])[0].get("queues") or []
    spread = ""
    if len(queues) > 1:
        got = [q.get("rx_packets", 0) for q in queues]
        spread = f", port A queues received {'/'.join(str(g) for g in got)}"
        if min(got) == 0:
            problems.append(f"one of {len(queues)} queues received nothing ({got}): the flows did not spread over the queue pairs")
    rates = [r for r in (p.arrival_rate() for p in phases) if r]
    rate = f", arriving at {max(rates):.0f} frames/s" if rates else ""
    sizes = [len(fr) for p in phases for _, _, fr in p.frames]
    flows = max(len({f for f, _, _ in p.frames}) for p in phases)
    detail = (f"{received}/{sent} frames ({len(phases)} phase(s), {flows} flows, {min(sizes)}..{max(sizes)} bytes) "
              f"{phases[0].src}->{phases[0].dst} intact, once, in flow order; {missing} missing, vio-fwd dropped {drops}, "
              f"forwarded {fwd.get('forwarded')}, wait {fwd.get('wait')}{spread}{rate}")
    return (not problems), ("; ".join(problems) + rate if problems else detail)


@hostchecks.hostcheck("net-traffic-complete", nargs=2)
def _net_traffic_complete(ctx, args):
    """One phase of a run had to arrive whole: every frame intact, once, in
    per-flow order, none missing whatever the forwarder counted (issue 18:
    the frames sent after a port recovered from DEVICE_NEEDS_RESET)."""
    run, name = args
    runs = getattr(ctx, "traffic_runs", None)
    p = next((p for p in (runs.phases.get(run, []) if runs else []) if p.name == name), None)
    if p is None:
        return False, f"no traffic phase {run}/{name} was sent"
    if p.error:
        return False, f"{name}: {p.error}"
    return p.verdict().summary(explained_losses=0)
@hostchecks.hostcheck("net-rss", nargs=1)
def _net_rss(ctx, args):
    """Issue 15: with RSS, each flow came back tagged with the queue the
    indirection table names for its Toeplitz hash, and that hash; phases with
    different tables (in order) move the flows the tables predict."""
    run = args[0]
    runs = getattr(ctx, "traffic_runs", None)
    phases = [p for p in (runs.phases.get(run, []) if runs else []) if p.rss]
    if not phases:
        return False, f"no RSS traffic was sent for run {run}"
    problems, parts, placements = [], [], []
    for p in phases:
        v = p.verdict()
        ok, text = v.summary()
        if not ok:
            problems.append(f"{p.name}: {text}")
        pr, queues = p.rss_problems()
        problems += [f"{p.name}: {x}" for x in pr]
        placements.append(queues)
        parts.append(f"{p.name} table {p.rss['table']}: {v.received}/{len(p.frames)} frames, flows on queues "
                     + "/".join(str(sum(1 for q in queues.values() if q == i)) for i in range(max(p.rss['table']) + 1)))
    if len(placements) > 1:
        moved = sum(1 for f in placements[0] if placements[-1].get(f) != placements[0][f])
        if moved == 0:
            problems.append("the changed table moved no flow")
        parts.append(f"{moved} flow(s) moved with the table")
    return (not problems), ("; ".join(problems) if problems else "; ".join(parts) + "; every frame tagged with the predicted queue and hash")


@hostchecks.hostcheck("net-filter", nargs=1)
def _net_filter(ctx, args):
    """Issue 15, MAC/VLAN receive filters: in every phase of the run, no frame
    of a flow marked filtered arrived, every other frame did (intact, once,
    in flow order, none missing), and vio-fwd's port A received exactly those
    (its JSON): the device dropped the filtered frames, vio-fwd never saw
    them. A phase without filtered flows (sent after the filters were
    cleared) must arrive whole."""
    run = args[0]
    phases, fwd, why = _run_phases_and_summary(ctx, run)
    if why:
        return False, why
    problems, parts, expected = [], [], 0
    for p in phases:
        if p.error:
            problems.append(f"{p.name}: {p.error}")
        v = p.verdict()
        ok, text = v.summary()
        if not ok:
            problems.append(f"{p.name}: {text}")
        expected += len(v.expected)
        kinds = []
        for f, t in enumerate(p.targets):
            n = sum(1 for fl, _, _ in p.frames if fl == f)
            got = sum(1 for k in v.seen if k[0] == f)
            kinds.append(f"{t}{' (filtered)' if t.filtered else ''} {got}/{n}")
        parts.append(f"{p.name}: " + ", ".join(kinds))
    ports = (fwd.get("ports") or []) + [{}, {}]
    a, b = ports[0], ports[1]
    rx = int(a.get("rx_packets", -1))
    if rx != expected:
        problems.append(f"vio-fwd received {rx} frames on port A, {expected} were to pass the filters: "
                        + ("the device let filtered frames through to vio-fwd" if rx > expected else "frames lost before vio-fwd"))
    # Nothing refused or lost on the way: a frame vio-fwd itself threw away would hide here.
    for k in ("rx_errors", "rx_dropped"):
        if int(a.get(k, -1)) != 0:
            problems.append(f"port A {k} {a.get(k)} (want 0)")
    if int(b.get("tx_packets", -1)) != expected:
        problems.append(f"port B sent {b.get('tx_packets')} frames, want {expected}")
    if int(fwd.get("dropped", 0)):
        problems.append(f"vio-fwd dropped {fwd.get('dropped')} frame(s)")
    # The filters need these negotiated (§5.1.6.5.1-3); without CTRL_VLAN QEMU passes every VLAN.
    features = a.get("detail", "").split("features ")[-1].split(",")
    lacking = [f for f in ("CTRL_VQ", "CTRL_RX", "CTRL_VLAN", "CTRL_MAC_ADDR") if f not in features]
    if any(p.filtered for p in phases) and lacking:
        problems.append(f"port A did not negotiate {', '.join(lacking)} ({a.get('detail')})")
    detail = "; ".join(parts) + f"; vio-fwd received {rx} on port A = the frames that passed"
    return (not problems), ("; ".join(problems) + " [" + detail + "]" if problems else detail)
