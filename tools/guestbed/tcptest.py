"""Host side of real TCP through the guest (issue 15; Tests/guest/plans/net-tcp.sh).

Two more virtio-net functions, net4 and net5, sit on taps (vnet headers on,
one queue, vhost off). Once QEMU has created them, each tap moves into its
own network namespace on the host:

    ns A (gbtcp-a-<pid>): tap gbtcpa<pid>  10.77.1.1/24  iperf3 client
    ns B (gbtcp-b-<pid>): tap gbtcpb<pid>  10.77.1.2/24  iperf3 server

One subnet, one L2: what joins the two taps is the guest — vio-fwd in io
mode (an L2 forwarder, no routing) or a Linux bridge on the guest kernel's
virtio_net — so nothing on the host routes between the namespaces and a
frame can only cross through the guest. Nothing here touches the host's
own interfaces or routes: the taps exist only while QEMU runs, live in the
namespaces, and the namespaces go when the boot ends (and stale ones of
dead test runs at the next start).

The guest drives it with

    HOSTREQ tcp-iperf <label>
        iperf3 (-J) from ns A to ns B for TRANSFER bytes, then one more
        TCP transfer of EXACT_BYTES random bytes (a file the host wrote) from
        ns A to a sink in ns B that answers with the count and SHA-256 of
        what it read up to the sender's FIN. The check tcp-iperf-<label>
        passes when iperf3's client sent TRANSFER bytes (or one write
        more: it stops at the first write past the count), both ends
        report a finished test with no error, and the sink got every byte of
        the file, in order (count and digest equal). iperf3's server stops
        counting when the client's end-of-test message arrives on the control
        connection, so bytes still in flight on the data connection are
        missing from its sum (esnet/iperf issue 382): its figure is reported
        (and must not exceed what was sent), the byte-exact proof is the
        digest.
        Afterwards, whatever the outcome, the host sends one frame
        (ethertype DONE_ETHERTYPE, broadcast) to the guest's net0: the
        guest waits for it before it stops the forwarder.
    HOSTREQ tcp-report
        the check tcp-side-by-side: every run's Gbit/s on one line.
"""

import hashlib
import json
import os
import tempfile
import re
import shutil
import subprocess
import threading
import time

from .netserver import ethernet_frame

DEVICES = [
    ("net4", "52:54:00:12:34:71", []),
    ("net5", "52:54:00:12:34:72", []),
]
REQUESTS = ("tcp-iperf", "tcp-report")
SUBNET = "10.77.1"
TRANSFER = 32 << 20              # bytes per run: well under a minute under TCG
IPERF_TIMEOUT_S = 240
DONE_ETHERTYPE = 0x88B5          # IEEE local experimental: never real traffic
PORT = 5201
EXACT_PORT = 5202
EXACT_BYTES = 8 << 20
# The exact transfer's two ends, run with `ip netns exec <ns> python3 -c`.
_SINK = """
import hashlib, socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(1); l.settimeout(float(sys.argv[3]))
c, _ = l.accept(); c.settimeout(float(sys.argv[3]))
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b); n += len(b)
c.sendall(f"{n} {h.hexdigest()}\\n".encode()); c.close()
"""
_SOURCE = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
with open(sys.argv[3], "rb") as f:
    s.sendfile(f)
s.shutdown(socket.SHUT_WR)
print(s.makefile().readline().strip())
"""
_NS_RE = re.compile(r"^gbtcp-[ab]-(\d+)$")


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


def _remove_stale_namespaces():
    """Namespaces a killed test run left behind (its pid is gone)."""
    try:
        names = [l.split()[0] for l in _ip("netns", "list").splitlines() if l.strip()]
    except (OSError, subprocess.SubprocessError):
        return
    for n in names:
        m = _NS_RE.match(n)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _ip("netns", "del", n, check=False)


class TcpBed:
    def __init__(self):
        pid = os.getpid()
        self.ns = {"net4": f"gbtcp-a-{pid}", "net5": f"gbtcp-b-{pid}"}
        self.tap = {"net4": f"gbtcpa{pid % 1000000}", "net5": f"gbtcpb{pid % 1000000}"}
        self.addr = {"net4": f"{SUBNET}.1", "net5": f"{SUBNET}.2"}
        self.results = []            # (label, ok, gbit_s or None)
        self._created = []
        self._mover = None
        self._move_error = None

    def start(self):
        if not os.path.exists("/dev/net/tun"):
            raise OSError("/dev/net/tun does not exist: the TCP test's taps cannot work here")
        _remove_stale_namespaces()
        for nid in ("net4", "net5"):
            _ip("netns", "add", self.ns[nid])
            self._created.append(self.ns[nid])
        return self

    def netdev_arg(self, nid):
        # vnet_hdr=on: fail loudly if the host cannot carry offload metadata.
        return (f"tap,id=n{nid},ifname={self.tap[nid]},script=no,downscript=no,"
                f"vhost=off,vnet_hdr=on")

    def attach(self):
        """Once QEMU runs: move the taps into the namespaces as soon as they
        exist (before the guest could use them, and before a migration's
        destination QEMU asks for the same tap names, which it then gets new
        in this namespace: down, unaddressed, gone with it)."""
        self._mover = threading.Thread(target=self._move, daemon=True, name="tcp-taps")
        self._mover.start()

    def _move(self):
        try:
            self._move_taps()
        except (OSError, subprocess.SubprocessError) as e:
            self._move_error = str(e)

    def _set_up(self):
        if self._mover is None:
            raise OSError("the taps were never moved (attach() not called)")
        self._mover.join(120)
        if self._mover.is_alive():
            raise OSError("moving the taps into their namespaces did not finish in 120 s")
        if self._move_error:
            raise OSError(self._move_error)

    def _move_taps(self):
        """Move each tap (QEMU created it in our namespace) into its own."""
        for nid in ("net4", "net5"):
            tap, ns = self.tap[nid], self.ns[nid]
            deadline = time.monotonic() + 60
            while not os.path.exists(f"/sys/class/net/{tap}"):
                if time.monotonic() > deadline:
                    raise OSError(f"tap {tap} never appeared (QEMU creates it at start)")
                time.sleep(0.1)
            _ip("link", "set", tap, "netns", ns)
            for path in ("all", "default", tap):
                subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                                f"echo 1 > /proc/sys/net/ipv6/conf/{path}/disable_ipv6"],
                               capture_output=True, timeout=30)
            _ip("-n", ns, "addr", "add", f"{self.addr[nid]}/24", "dev", tap)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", tap, "up")

    def _iperf(self, label):
        """One transfer; returns (ok, detail, gbit_s)."""
        if shutil.which("iperf3") is None:
            return False, "iperf3 is not installed on the host: apt-get install iperf3 (tools/test does)", None
        self._set_up()
        a, b = self.ns["net4"], self.ns["net5"]
        server = subprocess.Popen(["ip", "netns", "exec", b, "iperf3", "-s", "-1", "-J",
                                   "-B", self.addr["net5"], "-p", str(PORT)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while f":{PORT}" not in self._listening(b):
                if server.poll() is not None or time.monotonic() > deadline:
                    return False, f"iperf3 server did not listen: {server.stderr.read().strip()}", None
                time.sleep(0.1)
            client = subprocess.run(["ip", "netns", "exec", a, "iperf3", "-c", self.addr["net5"],
                                     "-p", str(PORT), "-n", str(TRANSFER), "-J", "--connect-timeout", "30000"],
                                    capture_output=True, text=True, timeout=IPERF_TIMEOUT_S)
            out, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            return False, f"iperf3 did not finish in {IPERF_TIMEOUT_S} s (TCP stalled in the guest?)", None
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        ok, detail, gbit = _verdict(client.stdout, out)
        exact_ok, exact = self._exact()
        return ok and exact_ok, f"{detail}; {exact}", gbit if ok and exact_ok else None

    def _exact(self):
        """EXACT_BYTES of random data ns A -> ns B: (ok, detail)."""
        a, b = self.ns["net4"], self.ns["net5"]
        with tempfile.NamedTemporaryFile(prefix="gbtcp-", suffix=".bin") as f:
            data = os.urandom(EXACT_BYTES)
            f.write(data)
            f.flush()
            want = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
            sink = subprocess.Popen(["ip", "netns", "exec", b, "python3", "-c", _SINK, self.addr["net5"],
                                     str(EXACT_PORT), str(IPERF_TIMEOUT_S)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 30
                while f":{EXACT_PORT}" not in self._listening(b):
                    if sink.poll() is not None or time.monotonic() > deadline:
                        return False, f"the TCP sink did not listen: {sink.stderr.read().strip()[-300:]}"
                    time.sleep(0.1)
                t0 = time.monotonic()
                src = subprocess.run(["ip", "netns", "exec", a, "python3", "-c", _SOURCE, self.addr["net5"],
                                      str(EXACT_PORT), f.name, str(IPERF_TIMEOUT_S)],
                                     capture_output=True, text=True, timeout=IPERF_TIMEOUT_S + 30)
                secs = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                return False, f"the exact transfer did not finish in {IPERF_TIMEOUT_S} s"
            finally:
                if sink.poll() is None:
                    sink.kill()
                sink.wait()
        got = src.stdout.strip()
        if src.returncode != 0 or got != want:
            return False, (f"exact transfer: the sink in ns B read {got or 'nothing'} (want {want[:20]}...; "
                           f"sender exit {src.returncode}: {src.stderr.strip()[-200:]})")
        return True, f"{EXACT_BYTES} random bytes arrived whole, in order (SHA-256 equal), {secs:.1f} s"

    @staticmethod
    def _listening(ns):
        r = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltn"], capture_output=True, text=True, timeout=30)
        return r.stdout

    def handle(self, parts, net0, checks, note):
        """Acts on a HOSTREQ; returns an error text or None."""
        kind = parts[0]
        if kind == "tcp-report":
            if not self.results:
                return "tcp-report: no tcp-iperf run came before it"
            line = ", ".join(f"{l} {g:.3f} Gbit/s" if g is not None else f"{l} failed"
                             for l, _, g in self.results)
            checks.append(("tcp-side-by-side", all(ok for _, ok, _ in self.results),
                           f"{TRANSFER >> 20} MiB ns A -> ns B: {line}"))
            note(f"TCP side by side: {line}")
            return None
        if len(parts) < 2:
            return "tcp-iperf: no label"
        label = parts[1]
        try:
            ok, detail, gbit = self._iperf(label)
        except (OSError, subprocess.SubprocessError) as e:
            ok, detail, gbit = False, str(e), None
        finally:
            net0.send(ethernet_frame("ff:ff:ff:ff:ff:ff", "52:54:00:12:34:99", DONE_ETHERTYPE,
                                     f"tcp-iperf {label} done".encode()))
        self.results.append((label, ok, gbit))
        checks.append((f"tcp-iperf-{label}", ok, detail))
        note(f"tcp-iperf {label}: {detail}")
        return None

    def close(self):
        for ns in self._created:
            _ip("netns", "del", ns, check=False)
        self._created = []


def _verdict(client_json, server_json):
    """Both ends' iperf3 -J reports -> (ok, detail, Gbit/s)."""
    try:
        c = json.loads(client_json)
        s = json.loads(server_json)
    except ValueError as e:
        return False, f"iperf3 printed no JSON ({e}): {client_json[-300:]!r}", None
    for who, j in (("client", c), ("server", s)):
        if j.get("error"):
            return False, f"iperf3 {who}: {j['error']}", None
    sent = int(c.get("end", {}).get("sum_sent", {}).get("bytes", -1))
    got = int(s.get("end", {}).get("sum_received", {}).get("bytes", -1))
    secs = float(s.get("end", {}).get("sum_received", {}).get("seconds", 0) or 0)
    retrans = c.get("end", {}).get("sum_sent", {}).get("retransmits")
    problems = []
    # -n is met in whole writes of blksize (128 KiB for TCP): the client may
    # have one write in flight when it sees the count reached.
    blksize = int(c.get("start", {}).get("test_start", {}).get("blksize", 128 << 10) or (128 << 10))
    if not TRANSFER <= sent <= TRANSFER + blksize:
        problems.append(f"client sent {sent} bytes, want {TRANSFER} (at most one {blksize}-byte write more)")
    if not 0 < got <= sent:
        problems.append(f"server counted {got} bytes received of the {sent} sent")
    if secs <= 0:
        problems.append("server reports no transfer time")
    if problems:
        return False, "; ".join(problems), None
    gbit = got * 8 / secs / 1e9
    return True, (f"iperf3: {sent} bytes sent, server counted {got} received in {secs:.2f} s: "
                  f"{gbit:.3f} Gbit/s ({retrans} retransmits)"), gbit
