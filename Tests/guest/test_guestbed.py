"""Unit tests of the guest test bed's host side (no QEMU, no root needed).

    python3 -m unittest discover -s Tests/guest -v
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))

from guestbed import boot, devicework, hostchecks, hotplug, initramfs, migration, plan, tcptest, variants  # noqa: E402
from guestbed.netserver import FrameServer, ethernet_frame  # noqa: E402
from guestbed.qmp import QMP, QMPError  # noqa: E402


class VariantTests(unittest.TestCase):
    def test_split_is_qemu_defaults(self):
        v = variants.parse("split")
        self.assertEqual(v.net_props(), [])
        self.assertEqual(v.blk_props(), [])
        self.assertEqual(v.env(2)["GUESTBED_RING"], "split")
        self.assertEqual(v.env(2)["GUESTBED_BLK_QUEUES"], "2")

    def test_packed_and_modifiers(self):
        v = variants.parse("packed:event_idx=off:indirect=off:blk-qsize=64:mq=2")
        self.assertEqual(v.blk_props(), ["packed=on", "event_idx=off", "indirect_desc=off",
                                         "queue-size=64", "num-queues=2"])
        self.assertEqual(v.net_props(), ["packed=on", "event_idx=off", "indirect_desc=off",
                                         "mq=on", "vectors=6", "rss=on", "hash=on"])
        self.assertEqual(v.name, "packed:event_idx=off:indirect=off:blk-qsize=64:mq=2")

    def test_net_queue_size_sets_rx_and_tx(self):
        v = variants.parse("split:net-qsize=512")
        self.assertEqual(v.net_props(), ["rx_queue_size=512", "tx_queue_size=512"])

    def test_defaults_apply_and_spec_wins(self):
        vs = variants.parse_list("split,packed:event_idx=on", [("event_idx", "off")])
        self.assertEqual(vs[0].event_idx, False)
        self.assertEqual(vs[1].event_idx, True)

    def test_blk_null_adds_a_null_co_function_behind_the_iommu(self):
        v = variants.parse("split:blk-null=on")
        self.assertEqual(v.env(2)["GUESTBED_BLK_NULL"], "on")
        self.assertEqual(variants.parse("split").env(2)["GUESTBED_BLK_NULL"], "off")
        args = boot.null_blk_args(v)
        self.assertIn("driver=null-co", args[args.index("-blockdev") + 1])
        self.assertIn("read-zeroes=on", args[args.index("-blockdev") + 1])
        dev = args[args.index("-device") + 1].split(",")
        self.assertEqual(dev[0], "virtio-blk-pci")
        self.assertIn("serial=vio-null", dev)
        self.assertIn("iommu_platform=on", dev)
        # Without a vIOMMU the function offers no ACCESS_PLATFORM, as blk0.
        self.assertNotIn("iommu_platform=on", boot.null_blk_args(variants.parse("split:blk-null=on:iommu=off"))[3])

    def test_extra_qemu_args_come_last(self):
        class K:
            vmlinuz = "/k"
        old = os.environ.get("GUESTBED_QEMU_EXTRA")
        try:
            os.environ["GUESTBED_QEMU_EXTRA"] = "-name debug-threads=on -trace 'virtio_queue_notify'"
            cmd = boot.qemu_command(K(), "/i", variants.parse("split"), "user,id=n0", "/d", "/q.sock")
            self.assertEqual(cmd[-4:], ["-name", "debug-threads=on", "-trace", "virtio_queue_notify"])
            del os.environ["GUESTBED_QEMU_EXTRA"]
            cmd = boot.qemu_command(K(), "/i", variants.parse("split"), "user,id=n0", "/d", "/q.sock")
            self.assertEqual(cmd[-2:], ["-qmp", "unix:/q.sock,server=on,wait=off"])
            # An open quote: a message naming the variable, not shlex's traceback.
            os.environ["GUESTBED_QEMU_EXTRA"] = "-trace 'virtio_queue_notify"
            with self.assertRaisesRegex(ValueError, "GUESTBED_QEMU_EXTRA=.*does not split"):
                boot.extra_qemu_args()
            del os.environ["GUESTBED_QEMU_EXTRA"]
        finally:
            if old is not None:
                os.environ["GUESTBED_QEMU_EXTRA"] = old

    def test_guestbed_qemu_picks_the_binary(self):
        class K:
            vmlinuz = "/k"
        old = os.environ.pop("GUESTBED_QEMU", None)
        try:
            cmd = boot.qemu_command(K(), "/i", variants.parse("split"), "user,id=n0", "/d", "/q.sock")
            self.assertEqual(cmd[0], "qemu-system-x86_64")
            os.environ["GUESTBED_QEMU"] = "/opt/q10/bin/qemu-system-x86_64"
            cmd = boot.qemu_command(K(), "/i", variants.parse("split"), "user,id=n0", "/d", "/q.sock")
            self.assertEqual(cmd[0], "/opt/q10/bin/qemu-system-x86_64")
            self.assertEqual(cmd[1:3], ["-accel", "tcg"])
            os.environ["GUESTBED_QEMU"] = ""     # set but empty: Debian's
            self.assertEqual(boot.qemu_binary(), "qemu-system-x86_64")
        finally:
            os.environ.pop("GUESTBED_QEMU", None)
            if old is not None:
                os.environ["GUESTBED_QEMU"] = old

    def test_rejects_bad_specs(self):
        for bad in ("ring", "split:qsize=100", "split:net-qsize=128", "split:foo=1",
                    "split:event_idx=maybe", "split:mq", "split,split", "split:blk-null=maybe"):
            with self.assertRaises(variants.VariantError, msg=bad):
                variants.parse_list(bad)


class InitramfsCopyTests(unittest.TestCase):
    def test_binary_named_like_an_applet_replaces_the_link_not_busybox(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "busybox"), "w") as f:
                f.write("busybox")
            os.symlink("busybox", os.path.join(d, "setpriv"))
            src = os.path.join(d, "src")
            with open(src, "w") as f:
                f.write("util-linux setpriv")
            initramfs._copy_file(src, os.path.join(d, "setpriv"), 0o755)
            self.assertFalse(os.path.islink(os.path.join(d, "setpriv")))
            with open(os.path.join(d, "busybox")) as f:
                self.assertEqual(f.read(), "busybox")
            with open(os.path.join(d, "setpriv")) as f:
                self.assertEqual(f.read(), "util-linux setpriv")


class PlanTests(unittest.TestCase):
    def test_compose_ends_with_plan_done(self):
        text = plan.compose("echo hi\n")
        self.assertTrue(text.startswith("#!/bin/sh\n"))
        self.assertIn(". /lib/guestbed.sh", text)
        self.assertTrue(text.endswith('echo hi\necho "PLAN DONE"\n'))

    def test_default_plan_runs_programs_with_addresses(self):
        body = plan.default_plan_body(["vio-guest-check"])
        self.assertIn('/bin/vio-guest-check --net "$NET" --blk "$BLK"', body)
        self.assertIn("find_virtio 0x1041", body)
        self.assertIn("find_virtio 0x1042", body)

    def test_wait_until_keeps_a_deadline_not_a_poll_count(self):
        # The guest library in sh, with the clock and usleep replaced: each
        # poll reads the clock once and the clock moves 1 s per read, so a
        # 5-s wait for a command that never succeeds polls 5 times and fails;
        # one that succeeds on its third try returns 0 after three polls.
        script = plan.guest_library() + r'''
usleep() { :; }
# (a file: wait_until reads the clock in a subshell)
echo 100 >"$CLOCK"
uptime_s() { read -r _c <"$CLOCK"; _c=$((_c + 1)); echo $_c >"$CLOCK"; echo $_c; }
_tries=0
never() { _tries=$((_tries + 1)); return 1; }
wait_until 5 never; echo "never rc=$? tries=$_tries"
_tries=0
third() { _tries=$((_tries + 1)); [ $_tries -ge 3 ]; }
wait_until 5 third; echo "third rc=$? tries=$_tries"
'''
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                                 env={**os.environ, "CLOCK": os.path.join(d, "clock")})
        self.assertEqual(out.stdout.splitlines()[-2:], ["never rc=1 tries=5", "third rc=0 tries=3"], out.stderr)

    def test_env_file_quotes(self):
        self.assertEqual(plan.env_file({"B": "x y", "A": "it's"}),
                         "export A='it'\\''s'\nexport B='x y'\n")


class ConsoleParsingTests(unittest.TestCase):
    def test_check_lines(self):
        m = boot._CHECK_RE.search("CHECK FAIL net-rx: timeout after 3 s")
        self.assertEqual(m.groups(), ("FAIL", "net-rx", "timeout after 3 s"))
        m = boot._CHECK_RE.search("CHECK PASS blk-read")
        self.assertEqual(m.group(1, 2), ("PASS", "blk-read"))
        self.assertIsNone(boot._CHECK_RE.search("HOSTCHECK net-rx abcd"))


class HostCheckTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.img = os.path.join(self.tmp.name, "disk.img")
        hostchecks.create_disk_image(self.img, size_mib=1)

    def tearDown(self):
        self.tmp.cleanup()

    def ctx(self, frames=()):
        return hostchecks.BootContext(variants.parse("split"), list(frames), self.img, [],
                                      self.tmp.name)

    def test_disk_pattern(self):
        with open(self.img, "rb") as f:
            f.seek(7 * 512)
            s = f.read(512)
        self.assertEqual(s, hostchecks.sector_pattern(7))
        self.assertEqual(s[:16], b"GUESTBED" + (7).to_bytes(8, "little"))
        self.assertEqual(os.path.getsize(self.img), 1 << 20)

    def test_blk_checks(self):
        name, ok, _ = hostchecks.run_requested(self.ctx(), ["blk-pattern", "0", "2048"])
        self.assertEqual((name, ok), ("host-blk-pattern", True))
        with open(self.img, "r+b") as f:
            f.seek(4096)
            f.write(b"hello")
        name, ok, _ = hostchecks.run_requested(self.ctx(), ["blk-data", "4096", b"hello".hex(), "w"])
        self.assertEqual((name, ok), ("host-blk-data-w", True))
        _, ok, why = hostchecks.run_requested(self.ctx(), ["blk-pattern", "0", "9"])
        self.assertFalse(ok)
        self.assertIn("sector 8", why)

    def test_net_rx(self):
        frames = [ethernet_frame("ff:ff:ff:ff:ff:ff", "52:54:00:00:00:01", 0x88B5, b"xxMARKyy")]
        self.assertTrue(hostchecks.run_requested(self.ctx(frames), ["net-rx", b"MARK".hex()])[1])
        self.assertFalse(hostchecks.run_requested(self.ctx(frames), ["net-rx", b"NOPE".hex()])[1])

    def test_bad_requests_fail(self):
        for req in (["nope"], ["net-rx"], ["net-rx", "zz"], []):
            self.assertFalse(hostchecks.run_requested(self.ctx(), req)[1], req)


class ForwardAccountingTests(unittest.TestCase):
    """fwdtest's kernel-path accounting: every frame taken in is sent or counted dropped."""

    def fwd(self, rx0, tx1, drop1, path="kernel"):
        port = lambda rx, tx, drop: {"path": path, "rx_packets": rx, "tx_packets": tx, "tx_dropped": drop}
        return {"mode": "io", "ports": [port(rx0, 0, 0), port(0, tx1, drop1)]}

    def test_balanced(self):
        from guestbed import fwdtest
        self.assertEqual(fwdtest._accounting_problems(self.fwd(1500, 1469, 31)), [])

    def test_vanished_frames_reported(self):
        from guestbed import fwdtest
        problems = fwdtest._accounting_problems(self.fwd(1539, 1469, 0))
        self.assertEqual(len(problems), 1)
        self.assertIn("70 frame(s) neither delivered nor counted", problems[0])

    def test_only_the_kernel_path(self):
        from guestbed import fwdtest
        self.assertEqual(fwdtest._accounting_problems(self.fwd(1539, 1469, 0, path="vfio")), [])


class RSSCheckTests(unittest.TestCase):
    """fwdtest's Toeplitz (the host's prediction of vio-fwd --rss queues)
    against the RSS verification suite, and the tag round trip."""

    def test_toeplitz_vectors(self):
        from guestbed import fwdtest
        k = fwdtest.RSS_KEY
        for src, dst, sport, dport, l3, l4 in [
            ((66, 9, 149, 187), (161, 142, 100, 80), 2794, 1766, 0x323e8fc2, 0x51ccc178),
            ((199, 92, 111, 2), (65, 69, 140, 83), 14230, 4739, 0xd718262a, 0xc626b0ea),
            ((153, 39, 163, 191), (202, 188, 127, 2), 44251, 1303, 0x5d1809c5, 0x10e828a2),
        ]:
            self.assertEqual(fwdtest.toeplitz(k, bytes(src + dst)), l3)
            self.assertEqual(fwdtest.toeplitz(k, bytes(src + dst) + struct.pack(">HH", sport, dport)), l4)

    def test_untag_restores_the_frame(self):
        from guestbed import fwdtest, traffic
        fr = traffic.frame(7, 3, 1, 100)
        tagged = fr[:6] + bytes([2, 1, 0xde, 0xad, 0xbe, 0xef]) + fr[12:]
        self.assertEqual(fwdtest.untag(tagged), fr)
        self.assertEqual(traffic.parse(fwdtest.untag(tagged), 7)[:3], (3, 1, True))


class FilterCheckTests(unittest.TestCase):
    """Issue 15's receive-filter check: tagged frames per target, and the
    host check's verdict on what a device with filters let through."""

    TARGETS = [{"mac": "52:54:00:12:34:61", "filtered": True}, {"mac": "02:00:00:00:0a:0a", "vlan": 7, "filtered": True},
               {"mac": "02:00:00:00:0a:0a"}, {"mac": "02:00:00:00:0a:0a", "vlan": 5}]

    class Port:
        def __init__(self):
            self.frames = []

        def send(self, fr):
            pass

        def received(self, predicate):
            return [f for f in self.frames if predicate(f)]

    def test_tagged_frames(self):
        from guestbed import traffic
        t = traffic.Target("02:00:00:00:0a:0a", 5)
        frames = traffic.plan(3, 42, targets=[traffic.Target(), t])
        tagged = [fr for f, _, fr in frames if f == 1]
        self.assertTrue(all(fr[:6] == bytes.fromhex("020000000a0a") for fr in tagged))
        self.assertTrue(all(fr[12:18] == bytes.fromhex("810000050800") for fr in tagged))
        self.assertGreaterEqual(min(len(fr) for fr in tagged), 66)
        for f, s, fr in frames:
            self.assertEqual(traffic.parse(fr, 3, {(f, s): fr})[:3], (f, s, True))
        self.assertRaises(ValueError, traffic.Target, "02:00:00:00:0a", None)
        self.assertRaises(ValueError, traffic.Target, None, 4096)

    def test_tap_capture_puts_the_tag_back(self):
        # The host's receive path moves a tag to PACKET_AUXDATA (seen on a veth pair: the data says 0x0800).
        from guestbed import netserver, traffic
        fr = traffic.frame(1, 0, 0, 100, traffic.Target("02:00:00:00:0a:0a", 5))
        stripped = fr[:12] + fr[16:]
        aux = struct.pack("=IIIHHHH", netserver.TP_STATUS_VLAN_VALID | netserver.TP_STATUS_VLAN_TPID_VALID, 0, 0, 0, 0, 5, 0x8100)
        anc = [(netserver.SOL_PACKET, netserver.PACKET_AUXDATA, aux)]
        self.assertEqual(netserver.with_vlan_tag(stripped, anc), fr)
        untagged = struct.pack("=IIIHHHH", 0, 0, 0, 0, 0, 0, 0)
        self.assertEqual(netserver.with_vlan_tag(stripped, [(netserver.SOL_PACKET, netserver.PACKET_AUXDATA, untagged)]), stripped)

    def run_check(self, deliver, rx_packets, features="MAC,CTRL_VQ,CTRL_RX,CTRL_VLAN,CTRL_MAC_ADDR,VERSION_1"):
        from guestbed import fwdtest
        ports = {"net1": self.Port(), "net2": self.Port()}
        runs = fwdtest.Runs()
        for name, filtered in (("f1", True), ("f2", False)):
            targets = [dict(t, filtered=t.get("filtered", False) and filtered) for t in self.TARGETS]
            spec = {"from": "net1", "to": "net2", "count": 40, "rate": 0, "targets": targets}
            self.assertIsNone(runs.handle("net-traffic", ["flt", name, json.dumps(spec)], ports, lambda _: None))
        for p in runs.phases["flt"]:
            p.thread.join()
            ports["net2"].frames += [fr for f, _, fr in p.frames if deliver(p, f)]
        a = {"rx_packets": rx_packets, "rx_errors": 0, "rx_dropped": 0,
             "detail": "split ring; VFIO; features " + features}
        line = "VIOFWD-JSON flt " + json.dumps({"dropped": 0, "ports": [a, {"tx_packets": rx_packets}]})
        ctx = hostchecks.BootContext("split", [], None, [line], None)
        ctx.traffic_runs = runs
        return hostchecks.run_requested(ctx, ["net-filter", "flt"])

    def test_filtered_frames_absent_passes(self):
        name, ok, why = self.run_check(lambda p, f: p.name == "f2" or f >= 2, 20 + 40)
        self.assertEqual((name, ok), ("host-net-filter", True), why)
        self.assertIn("52:54:00:12:34:61 (filtered) 0/10", why)

    def test_a_filtered_frame_that_arrived_fails(self):
        _, ok, why = self.run_check(lambda p, f: p.name == "f2" or f >= 1, 20 + 40)
        self.assertFalse(ok)
        self.assertIn("should have been filtered", why)

    def test_vio_fwd_receiving_filtered_frames_fails(self):
        _, ok, why = self.run_check(lambda p, f: p.name == "f2" or f >= 2, 40 + 40)
        self.assertFalse(ok)
        self.assertIn("the device let filtered frames through", why)

    def test_filters_without_ctrl_vlan_fail(self):
        _, ok, why = self.run_check(lambda p, f: p.name == "f2" or f >= 2, 20 + 40, features="MAC,CTRL_VQ,CTRL_RX,VERSION_1")
        self.assertFalse(ok)
        self.assertIn("did not negotiate CTRL_VLAN, CTRL_MAC_ADDR", why)

    def test_not_arriving_after_clearing_fails(self):
        _, ok, why = self.run_check(lambda p, f: f >= 2, 20 + 20)
        self.assertFalse(ok)
        self.assertIn("f2: 20 missing", why)


class FrameServerTests(unittest.TestCase):
    def test_round_trip(self):
        srv = FrameServer().start()
        try:
            srv.send(b"early")                       # queued before connect
            c = socket.create_connection(("127.0.0.1", srv.port))
            for fr in (b"one", b"two-two"):
                c.sendall(struct.pack(">I", len(fr)) + fr)
            self.assertEqual(srv.wait_for(lambda f: f == b"two-two", 5), b"two-two")
            self.assertEqual(srv.frames, [b"one", b"two-two"])
            srv.send(b"late", count=2)
            got = b""
            while len(got) < 3 * 4 + 5 + 2 * 4:
                got += c.recv(100)
            self.assertEqual(got, b"".join(struct.pack(">I", len(x)) + x
                                           for x in (b"early", b"late", b"late")))
            self.assertIn("addr.port=%d" % srv.port, srv.netdev_arg())
            c.close()
        finally:
            srv.close()


def fake_qemu(test, answer, before=b""):
    """A QMP server on a fresh socket: `before` (raw lines), the greeting,
    then answer(cmd, f) for each command. Returns the socket's path and the
    server thread."""
    tmp = tempfile.TemporaryDirectory()
    test.addCleanup(tmp.cleanup)
    path = os.path.join(tmp.name, "qmp.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)

    def serve():
        conn, _ = ls.accept()
        f = conn.makefile("rwb")
        f.write(before + b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        for line in f:
            answer(json.loads(line), f)
            f.flush()
        conn.close()

    test.addCleanup(ls.close)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return path, t


class QMPTests(unittest.TestCase):
    def test_handshake_events_errors(self):
        seen = []

        def answer(cmd, f):
            seen.append(cmd)
            if cmd["execute"] == "query-status":
                f.write(b'{"event": "RESUME", "timestamp": {}}\n')
                f.write(b'{"return": {"status": "running", "running": true}}\n')
            elif cmd["execute"] == "bad":
                f.write(b'{"error": {"class": "CommandNotFound", "desc": "no"}}\n')
            else:
                f.write(b'{"return": {}}\n')

        path, t = fake_qemu(self, answer)
        with QMP(path, timeout=5) as q:
            self.assertEqual(q.execute("query-status")["status"], "running")
            self.assertEqual(q.events[0]["event"], "RESUME")
            q.execute("set_link", name="net0", up=False)
            with self.assertRaises(QMPError):
                q.execute("bad")
        t.join(5)
        self.assertEqual(seen[0], {"execute": "qmp_capabilities"})
        self.assertEqual(seen[2], {"execute": "set_link",
                                   "arguments": {"name": "net0", "up": False}})


    def test_event_ahead_of_the_greeting_is_kept(self):
        # What QEMU 7.2 sent a reconnecting client in a CI run: an event first.
        path, t = fake_qemu(self, lambda cmd, f: f.write(b'{"return": {}}\n'), before=(
            b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "NETDEV_STREAM_CONNECTED",'
            b' "data": {"netdev-id": "nnet3"}}\n'))
        with QMP(path, timeout=5) as q:
            self.assertIn("QMP", q.greeting)
            self.assertEqual([e["event"] for e in q.events], ["NETDEV_STREAM_CONNECTED"])
            self.assertEqual(q.wait_event("NETDEV_STREAM_CONNECTED", timeout=0.1)["data"]["netdev-id"], "nnet3")
        t.join(5)

    def test_anything_else_ahead_of_the_greeting_is_refused(self):
        path, t = fake_qemu(self, lambda cmd, f: f.write(b'{"return": {}}\n'), before=b'{"return": {}}\n')
        with self.assertRaisesRegex(RuntimeError, "not a QMP greeting"):
            QMP(path, timeout=5)


class FaultTests(unittest.TestCase):
    """Issue 18's host side: the destination's command line, the RARP count,
    and waiting for a QMP event that came earlier or comes later."""

    def test_destination_command(self):
        with tempfile.TemporaryDirectory() as d:
            cmd = ["qemu", "-device", "x", "-qmp", "unix:/a/qmp.sock,server=on,wait=off"]
            out, qmp_sock, mig_sock = migration.destination_command(cmd, d)
            self.assertEqual(out[:3], cmd[:3])
            self.assertEqual(out[4], f"unix:{qmp_sock},server=on,wait=off")
            self.assertEqual(out[-3:], ["-S", "-incoming", f"unix:{mig_sock}"])

    def test_move_mode(self):
        tcg = ["qemu", "-accel", "tcg", "-m", "1024"]
        v72, v90 = {"qemu": {"major": 7, "minor": 2, "micro": 22}}, {"qemu": {"major": 9, "minor": 0, "micro": 0}}
        old = os.environ.pop("GUESTBED_MIGRATE", None)
        try:
            self.assertEqual(migration.move_mode(tcg, v72), "stopped", "TCG before 9.0 loses writes in a live move")
            self.assertEqual(migration.move_mode(["qemu", "-accel", "tcg,thread=single"], v72), "stopped")
            self.assertEqual(migration.move_mode(tcg, v90), "live")
            self.assertEqual(migration.move_mode(["qemu", "-accel", "kvm"], v72), "live")
            os.environ["GUESTBED_MIGRATE"] = "live"
            self.assertEqual(migration.move_mode(tcg, v72), "live")
        finally:
            os.environ.pop("GUESTBED_MIGRATE", None)
            if old is not None:
                os.environ["GUESTBED_MIGRATE"] = old

    def test_ram_ranges(self):
        self.assertEqual(migration.ram_ranges(1024), [(0, 1 << 30)])
        self.assertEqual(migration.ram_ranges(2815), [(0, 2815 << 20)])
        # q35 keeps 2 GiB below 4 GiB from 2.75 GiB on; the rest starts at 4 GiB
        self.assertEqual(migration.ram_ranges(2816), [(0, 2 << 30), (4 << 30, 768 << 20)])
        self.assertEqual(migration.ram_ranges(4096), [(0, 2 << 30), (4 << 30, 2 << 30)])

    def test_compare_ram(self):
        class FakeQMP:
            """pmemsave writes this side's RAM image; the destination is paused."""
            def __init__(self, ram):
                self.ram = ram

            def execute(self, cmd, **args):
                if cmd == "query-status":
                    return {"status": "paused"}
                assert cmd == "pmemsave", cmd
                with open(args["filename"], "wb") as f:
                    f.write(self.ram[args["val"]:args["val"] + args["size"]])
                return {}

        mib = 2
        src = bytearray(os.urandom(mib << 20))
        src[0x1ff000:0x1ff004] = bytes(4)
        with tempfile.TemporaryDirectory() as d:
            cmd = ["qemu", "-m", str(mib)]
            ok, why = migration.compare_ram(cmd, d, FakeQMP(bytes(src)), FakeQMP(bytes(src)))
            self.assertTrue(ok, why)
            self.assertIn("all 512 pages", why)
            dst = bytearray(src)
            dst[0x1234] ^= 1                   # page 1
            dst[0x1ff000:0x1ff004] = b"lost"   # the last page
            ok, why = migration.compare_ram(cmd, d, FakeQMP(bytes(src)), FakeQMP(bytes(dst)))
            self.assertFalse(ok)
            self.assertIn("2 of 512 pages", why)
            self.assertIn("(5 bytes;", why)
            self.assertIn("0x1000, 0x1ff000", why)
            with open(os.path.join(d, "ram-diff", "0x1ff000.dst"), "rb") as f:
                self.assertEqual(f.read(4), b"lost")
            self.assertEqual(sorted(os.listdir(d)), ["ram-diff"], "the RAM images are removed")

    def test_rarp_count(self):
        mac = bytes.fromhex("525400123461")
        rarp = b"\xff" * 6 + mac + b"\x80\x35" + bytes([0, 1, 8, 0, 6, 4, 0, 3]) + mac + bytes(4) + mac + bytes(4)
        rarp += bytes(60 - len(rarp))

        class Port:
            frames = [rarp] * 3 + [rarp[:12] + b"\x08\x00" + rarp[14:]]
            times = [10.0, 11.0, 12.0, 12.0]

        class Ctx:
            net_ports = {"net1": Port()}
            migration = migration.Migration()
        Ctx.migration.started_at, Ctx.migration.done_at, Ctx.migration.rounds = 10.5, 10.6, 1
        check = hostchecks._handlers["migrate-announce"][0]
        ok, why = check(Ctx, ["net1", "52:54:00:12:34:61", "1"])
        self.assertTrue(ok, why)
        ok, why = check(Ctx, ["net1", "52:54:00:12:34:61", "2"])
        self.assertFalse(ok, "one RARP too few")
        ok, why = check(Ctx, ["net1", "52:54:00:12:34:61", "0"])
        self.assertFalse(ok, "the driver must have announced")

    def test_hotplug_device_props(self):
        props = hotplug.device_props()
        self.assertEqual(props["nethp"]["bus"], "rpnethp")
        self.assertEqual(props["blkhp"]["drive"], "dblkhp")
        with tempfile.TemporaryDirectory() as d:
            args = hotplug.qemu_args(d, "stream,id=nnethp")
            self.assertLess(args.index("pcie-root-port,id=rpnethp,chassis=41,slot=41"),
                            args.index(next(a for a in args if a.startswith("virtio-net-pci,id=nethp"))))
        # QMP gets JSON booleans (QEMU 10 refuses "on" for a bool), the command line on/off.
        self.assertIs(props["nethp"]["ats"], True)
        self.assertIs(props["blkhp"]["iommu_platform"], True)
        net = next(a for a in args if a.startswith("virtio-net-pci,id=nethp")).split(",")
        self.assertIn("ats=on", net)
        self.assertIn("iommu_platform=on", net)
        self.assertIn("disable-legacy=on", net)

    def test_wait_event(self):
        def answer(cmd, f):
            f.write(b'{"event": "DEVICE_DELETED", "data": {"device": "a"}}\n')
            f.write(b'{"return": {}}\n')
            f.write(b'{"event": "DEVICE_DELETED", "data": {"device": "b"}}\n')

        path, _ = fake_qemu(self, answer)
        with QMP(path, timeout=5) as q:
            self.assertEqual(q.wait_event("DEVICE_DELETED", lambda d: d.get("device") == "a", 5)["data"]["device"], "a")
            self.assertEqual(q.wait_event("DEVICE_DELETED", lambda d: d.get("device") == "b", 5)["data"]["device"], "b")
            self.assertIsNone(q.wait_event("DEVICE_DELETED", lambda d: d.get("device") == "c", 0.2))


class ModuleTests(unittest.TestCase):
    def test_modinfo_of_a_tiny_elf(self):
        # an ELF64 with sections: null, .shstrtab, .modinfo
        shstr = b"\0.shstrtab\0.modinfo\0"
        modinfo = b"license=GPL\0depends=virtio,virtio_ring\0name=x\0"
        data_off = 64
        shoff = data_off + len(shstr) + len(modinfo)
        hdr = bytearray(64)
        hdr[:6] = b"\x7fELF\x02\x01"
        struct.pack_into("<Q", hdr, 0x28, shoff)
        struct.pack_into("<HHH", hdr, 0x3A, 64, 3, 1)

        def sh(name, off, size):
            s = bytearray(64)
            struct.pack_into("<I", s, 0, name)
            struct.pack_into("<QQ", s, 0x18, off, size)
            return bytes(s)

        elf = (bytes(hdr) + shstr + modinfo + sh(0, 0, 0)
               + sh(1, data_off, len(shstr)) + sh(11, data_off + len(shstr), len(modinfo)))
        info = initramfs.modinfo(elf)
        self.assertEqual(info["depends"], ["virtio,virtio_ring"])
        self.assertEqual(info["license"], ["GPL"])

    def test_load_order_puts_dependencies_first(self):
        tree = initramfs.ModuleTree.__new__(initramfs.ModuleTree)
        tree.moddir, tree.builtin = "/x", {"crc"}
        deps = {"vfio_pci": ["vfio_pci_core", "vfio"], "vfio_pci_core": ["vfio", "crc"],
                "vfio": [], "virtio": ["virtio_ring"], "virtio_ring": []}
        tree.paths = {n: n for n in deps}
        tree.depends = lambda n: deps[n]
        self.assertEqual(tree.load_order(["virtio", "vfio_pci", "maybe"], {"maybe"}),
                         ["virtio_ring", "virtio", "vfio", "vfio_pci_core", "vfio_pci"])
        with self.assertRaises(initramfs.InitramfsError):
            tree.load_order(["absent"])


class TcpVerdictTests(unittest.TestCase):
    """iperf3's two JSON reports -> the tcp-iperf check (tcptest._verdict)."""
    def reports(self, sent, got, secs=2.0, error=None):
        c = {"end": {"sum_sent": {"bytes": sent, "retransmits": 0}}}
        s = {"end": {"sum_received": {"bytes": got, "seconds": secs}}}
        if error:
            s["error"] = error
        return json.dumps(c), json.dumps(s)

    def test_whole_transfer_gives_gbits(self):
        ok, detail, gbit = tcptest._verdict(*self.reports(tcptest.TRANSFER, tcptest.TRANSFER - 4096))
        self.assertTrue(ok, detail)
        self.assertAlmostEqual(gbit, (tcptest.TRANSFER - 4096) * 8 / 2.0 / 1e9)

    def test_short_send_more_received_errors_and_garbage_fail(self):
        for args in ((tcptest.TRANSFER - 1, 100), (tcptest.TRANSFER, tcptest.TRANSFER + 1),
                     (tcptest.TRANSFER, 0), (tcptest.TRANSFER, 100, 0.0)):
            self.assertFalse(tcptest._verdict(*self.reports(*args))[0], args)
        self.assertFalse(tcptest._verdict(*self.reports(tcptest.TRANSFER, 100, error="unable to connect"))[0])
        self.assertFalse(tcptest._verdict("iperf3: error", "{}")[0])

    def test_netdev_has_vnet_headers_and_unique_names(self):
        bed = tcptest.TcpBed()
        arg = bed.netdev_arg("net4")
        self.assertIn("vnet_hdr=on", arg)
        self.assertIn("vhost=off", arg)
        self.assertNotEqual(bed.tap["net4"], bed.tap["net5"])
        self.assertTrue(all(len(t) <= 15 for t in bed.tap.values()), "IFNAMSIZ")


class DeviceWorkTests(unittest.TestCase):
    """tools/bench/guest-trace's counting (guestbed.devicework) on a made-up trace."""

    @staticmethod
    def run_lines(t0, frames, ring_hits, buffer_pages, doorbell_every, mmio=0):
        """One tool's run: per frame two pops, `ring_hits` translations on one
        ring page, one map of a buffer page (cycling over `buffer_pages`)."""
        out, t = [], t0
        for f in range(frames):
            for _ in range(2):
                t += 1e-5
                out.append(f"1@{t:.6f}:virtqueue_pop vq 0x1 elem 0x2 in_num 1 out_num 0")
            for _ in range(ring_hits):
                out.append(f"1@{t:.6f}:vtd_iotlb_page_hit IOTLB page hit sid 0x20 iova 0x200004 slpte 0x83 domain 0x3")
            page = 0x400000 + (f % buffer_pages) * 0x1000
            out.append(f"1@{t:.6f}:vtd_iotlb_page_hit IOTLB page hit sid 0x28 iova {page:#x} slpte 0x83 domain 0x3")
            if f % doorbell_every == 0:
                out.append(f"1@{t:.6f}:virtio_queue_notify vdev 0x1 n 1 vq 0x2")
                out.append(f"1@{t:.6f}:memory_region_ops_write cpu 1 mr 0x3 addr 0xfea0d000 value 0x1 size 2 "
                           "name 'virtio-pci-notify-virtio-net'")
        for _ in range(mmio):
            out.insert(10, f"1@{t0:.6f}:memory_region_ops_read cpu 1 mr 0x3 addr 0xfea0c014 value 0xf size 1 "
                           "name 'virtio-pci-common-virtio-net'")
        return out

    def console(self, *sent):
        who = ["dpdk", "ours", "ours", "dpdk"]
        return [f"[  9.1] BENCH net ring=packed mode=io who={who[i]} run={i // 2 + 1} pps=1 sent={n} not_sent=0 "
                f"received={n} rx_dropped=0 in_flight=0" for i, n in enumerate(sent)]

    def test_counts_per_frame_by_run(self):
        boot_noise = ["1@5.000000:virtqueue_pop vq 0x1 elem 0x2 in_num 1 out_num 0",
                      "1@5.000001:vtd_iotlb_page_hit IOTLB page hit sid 0x20 iova 0x900000 slpte 0x83 domain 0x3"]
        trace = (boot_noise + self.run_lines(10.0, 2000, 30, 500, 25)
                 + self.run_lines(20.0, 1000, 26, 500, 50, mmio=40))
        rows = [devicework.per_frame(s, r) for s, r in
                devicework.match(devicework.stretches(trace), devicework.bench_runs(self.console(2000, 1000)))]
        self.assertEqual([(p.who, p.frames) for p in rows], [("dpdk", 2000), ("ours", 1000)])
        self.assertAlmostEqual(rows[0].translations, 31.0)
        self.assertAlmostEqual(rows[0].ring, 30.0, msg="one page hit every frame is a ring page")
        self.assertAlmostEqual(rows[0].buffers, 1.0, msg="500 buffer pages, each hit 4 times in 2000 frames")
        self.assertAlmostEqual(rows[1].ring, 26.0)
        self.assertAlmostEqual(rows[0].doorbells, 0.04)
        self.assertAlmostEqual(rows[1].doorbells, 0.02)
        self.assertEqual(rows[0].mmio, 0.0, "the doorbell region is not counted as MMIO")
        self.assertAlmostEqual(rows[1].mmio, 0.04)
        out = __import__("io").StringIO()
        med = devicework.report(rows, out)
        self.assertAlmostEqual(med[("io", "dpdk")]["translations"] / med[("io", "ours")]["translations"], 31 / 27)
        self.assertIn("io: translations per frame, testpmd / ours: 1.148", out.getvalue())

    def test_runs_that_do_not_line_up_are_refused(self):
        trace = self.run_lines(10.0, 2000, 3, 50, 25) + self.run_lines(20.0, 1000, 3, 50, 25)
        with self.assertRaisesRegex(devicework.TraceError, "2 stretches .* for 3 runs"):
            devicework.match(devicework.stretches(trace), devicework.bench_runs(self.console(2000, 1000, 5)))
        with self.assertRaisesRegex(devicework.TraceError, "3000 frames sent but 2000 buffers popped"):
            devicework.match(devicework.stretches(trace), devicework.bench_runs(self.console(2000, 3000)))

    def test_a_pause_splits_runs_and_events_in_it_are_dropped(self):
        a = self.run_lines(10.0, 600, 2, 50, 10)
        gap = ["1@10.500000:memory_region_ops_read cpu 1 mr 0x3 addr 0xfea0c014 value 0xf size 1 "
               "name 'virtio-pci-common-virtio-net'"]
        b = self.run_lines(11.0, 600, 2, 50, 10)
        found = devicework.stretches(a + gap + b)
        self.assertEqual([s.pops for s in found], [1200, 1200])
        self.assertEqual(sum(sum(s.mmio.values()) for s in found), 0, "between runs: neither run's")


if __name__ == "__main__":
    unittest.main()
