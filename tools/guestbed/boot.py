"""One QEMU boot of one variant: start, watch the console, collect results.

Per boot, under <workdir>/<variant>/:
    disk.img        the virtio-blk image (every sector starts with its
                    initial pattern, see hostchecks.sector_pattern); kept
    console.log     the guest's serial console, with the host's notes
    frames.pcap     every frame the guest sent (Wireshark/tcpdump readable)
    qmp.sock        the QMP socket while QEMU runs
    qemu-cmd.sh     the exact QEMU command line (rerun it by hand)
    initrd.cpio     the initramfs of this variant
"""

import binascii
import json
import os
import queue
import re
import shlex
import signal
import socket
import struct
import subprocess
import threading
import time

from . import blktest, fwdtest, hostchecks, hotplug, log, migration, tcptest
from .netserver import FrameServer, TapPort
from .qmp import QMP, QMPError

QEMU = "qemu-system-x86_64"
KERNEL_CMDLINE = "console=ttyS0 intel_iommu=on iommu=pt panic=-1 quiet"
NET_MAC = "52:54:00:12:34:56"


def qemu_binary():
    """GUESTBED_QEMU: the QEMU to boot instead of Debian's (a path; e.g. the
    wrapper tools/guestbed/fetch-qemu writes for the backports suite's newer
    QEMU), so a result can be checked on another device model."""
    return os.environ.get("GUESTBED_QEMU") or QEMU


_CHECK_RE = re.compile(r"(?:^|[^A-Z])CHECK (PASS|FAIL) ([^\s:]+)(?::\s*(.*))?")
_HOSTCHECK_RE = re.compile(r"HOSTCHECK\s+(.*)$")
_HOSTREQ_RE = re.compile(r"HOSTREQ\s+(.*)$")


class BootResult:
    def __init__(self, variant):
        self.variant = variant
        self.checks = []            # (name, ok, reason), names without prefix
        self.console = []           # console lines
        self.plan_done = False
        self.guest_checks = 0       # CHECK lines the guest printed
        self.panic = None           # the "Kernel panic - ..." line
        self.timed_out = False
        self.qemu_rc = None
        self.wall_s = 0.0
        self.workdir = None

    @property
    def failed(self):
        return [c for c in self.checks if not c[1]]


def qemu_command(kernel, initrd, variant, netdev, disk, qmp_sock,
                 mem_mib=1024, smp=2, cmdline=KERNEL_CMDLINE, scratch=None, extra_nets=()):
    net = ["virtio-net-pci", "id=net0", "netdev=n0", f"mac={NET_MAC}",
           "disable-legacy=on"] + _iommu_props(variant) + ["romfile="]
    blk = ["virtio-blk-pci", "id=blk0", "drive=d0",
           "disable-legacy=on"] + _iommu_props(variant)[:1]
    if not variant.iommu:
        cmdline = cmdline.replace("intel_iommu=on iommu=pt ", "")
    return [
        qemu_binary(), "-accel", "tcg", "-machine", "q35,kernel-irqchip=split",
    ] + (["-cpu", variant.cpu] if variant.cpu else []) + [
        "-smp", str(smp), "-m", str(mem_mib),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-serial", "stdio", "-monitor", "none", "-no-reboot",
        "-kernel", kernel.vmlinuz, "-initrd", initrd, "-append", cmdline,
    ] + ([
        # the vIOMMU must come before the devices it translates for
        "-device", "intel-iommu,intremap=on,caching-mode=on,device-iotlb=on",
    ] if variant.iommu else []) + [
        "-netdev", netdev,
        "-device", ",".join(net + variant.net_props()),
        "-drive", f"file={disk},if=none,id=d0,format=raw",
        "-device", ",".join(blk + variant.blk_props()),
    ] + ([
        # A small disk nothing else reads, after blk0 (so it gets a later
        # PCI address): plans may put a filesystem on it (serial vio-scratch).
        # It offers ACCESS_PLATFORM in every variant: without a vIOMMU it is
        # the device the no-IOMMU path must refuse (fallback-noiommu.sh).
        "-drive", f"file={scratch},if=none,id=dscratch,format=raw",
        "-device", "virtio-blk-pci,id=blkscratch,drive=dscratch,serial=vio-scratch,"
                   "disable-legacy=on,iommu_platform=on",
    ] if scratch else []) + [
        # More virtio-net devices (the forwarder test's, fwdtest.DEVICES), after
        # the others so their PCI addresses stay put: (id, netdev, mac, props).
        a for nid, nd, mac, props in extra_nets for a in (
            "-netdev", nd,
            "-device", ",".join(_extra_net(nid, mac, variant, props)))
    ] + [
        "-qmp", f"unix:{qmp_sock},server=on,wait=off",
    ] + extra_qemu_args()


def extra_qemu_args():
    """GUESTBED_QEMU_EXTRA: more QEMU arguments, shell-split, last on the
    line — a diagnostic knob (e.g. "-trace virtio_queue_notify -D /tmp/t.log
    -msg timestamp=on" to count the drivers' notifications); no plan needs it.
    ValueError, with what to fix, when the value does not split (an open quote)."""
    value = os.environ.get("GUESTBED_QEMU_EXTRA", "")
    try:
        return shlex.split(value)
    except ValueError as e:
        raise ValueError(f"GUESTBED_QEMU_EXTRA={value!r} does not split into arguments ({e}): "
                         "quote it as a shell command line would be") from None


def null_blk_args(variant):
    """Variant blk-null=on: a virtio-blk function (serial vio-null) on QEMU's
    null-co driver — reads return zeroes at once, writes are dropped, no file
    and no thread pool behind it — so a benchmark sees the drivers' and the
    device model's cost, not the host page cache's (blk0 is a raw file,
    cache=writeback, aio=threads: QEMU's defaults)."""
    return ["-blockdev", "driver=null-co,node-name=dnull,size=268435456,read-zeroes=on",
            "-device", ",".join(["virtio-blk-pci", "id=blknull", "drive=dnull", "serial=vio-null",
                                 "disable-legacy=on"] + _iommu_props(variant)[:1] + variant.blk_props())]


def _iommu_props(variant):
    """ACCESS_PLATFORM (and ATS) only behind the vIOMMU: without one, the
    devices use physical addresses as they are (§6.1), which the no-IOMMU
    userspace path needs (it refuses a device that offers ACCESS_PLATFORM)."""
    return ["iommu_platform=on", "ats=on"] if variant.iommu else []


def _extra_net(nid, mac, variant, props):
    """-device properties of an extra virtio-net device; "legacy" in props: a
    legacy-only one (no virtio 1.x interface, so no ACCESS_PLATFORM either)."""
    base = ["virtio-net-pci", f"id={nid}", f"netdev=n{nid}", f"mac={mac}"]
    if "legacy" in props:
        return base + ["disable-modern=on", "disable-legacy=off", "romfile="]
    return (base + ["disable-legacy=on"] + _iommu_props(variant) + ["romfile="]
            + variant.net_props() + list(props))


# Variant net-pair=on: these two functions are joined back to back through a
# non-blocking unix socket pair QEMU inherits (`-netdev socket,fd=N`), so each
# receives what the other sends. Not a hub: a hub queues up to 10 000 frames
# for a receiver without buffers and then drops them, counted nowhere; a full
# socket holds the sender back instead. Not a socket QEMU connects to itself
# (`-netdev stream` or `socket,listen=/connect=`): QEMU 7.2 writes such a
# socket blocking from its main loop, which then never reads the other end
# (a deadlock once the buffer is full; seen). No host_mtu: the MTU of 1500
# both drivers would pick for a plain NIC (the benchmark's like for like).
PAIR_DEVICES = ("net1", "net2")


def _pair_net(nid, mac, pair):
    return (nid, f"socket,id=n{nid},fd={pair[PAIR_DEVICES.index(nid)].fileno()}", mac, [])


def _socket_pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for s in (a, b):
        s.setblocking(False)
        s.set_inheritable(True)
    return a, b


def _write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for fr in frames:
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)) + fr)


class _Console:
    """Reads QEMU's stdout (the serial console) on a thread, line by line."""

    def __init__(self, stream, lines=None):
        # A migration's destination QEMU feeds the same queue (migration.py).
        self.lines = lines if lines is not None else queue.Queue()
        self._t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._t.start()

    def _run(self, stream):
        for raw in iter(stream.readline, b""):
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self.lines.put(None)


def net_port(variant, backend=None, tap_name=None, mtu=None, txqueuelen=None):
    """The host side of the net device: the TCP frame server, or a tap when
    the variant wants more than one queue pair (or backend == "tap")."""
    if backend is None:
        backend = "tap" if (variant.net_queues or 1) > 1 else "stream"
    if backend == "tap":
        return TapPort(queues=variant.net_queues or 1, ifname=tap_name, mtu=mtu, txqueuelen=txqueuelen).start()
    if (variant.net_queues or 1) > 1:
        raise ValueError(f"{variant.name}: net-queues > 1 needs the tap backend")
    return FrameServer().start()


def boot(variant, kernel, initrd, workdir, timeout_s=600, mem_mib=1024,
         smp=2, echo_console=False, disk_mib=64, net_backend=None):
    res = BootResult(variant)
    res.workdir = workdir
    os.makedirs(workdir, exist_ok=True)
    disk = hostchecks.create_disk_image(os.path.join(workdir, "disk.img"), disk_mib)
    scratch = os.path.join(workdir, "scratch.img")
    with open(scratch, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    qmp_sock = os.path.join(workdir, "qmp.sock")
    if os.path.exists(qmp_sock):
        os.unlink(qmp_sock)
    extra_ports = {}                # the forwarder test's devices: id -> host side
    tcp = None                      # the real-TCP test's taps and namespaces (tcptest.py)
    try:
        server = net_port(variant, net_backend)
        for i, (nid, _, props) in enumerate(fwdtest.DEVICES):
            if variant.net_pair and nid in PAIR_DEVICES:
                continue
            if "legacy" in props:
                extra_ports[nid] = FrameServer().start()
                continue
            extra_ports[nid] = net_port(variant, net_backend, tap_name=f"gbtap{os.getpid() % 1000000}{'abcdefgh'[i]}",
                                        mtu=9000, txqueuelen=20000)
        # The surprise-removal test's net function: its own frame server (hotplug.py).
        extra_ports[hotplug.NET_ID] = FrameServer().start()
        tcp = tcptest.TcpBed().start()
    except (OSError, ValueError) as e:
        res.checks.append(("boot", False, f"host side of the net device: {e}"))
        for p in extra_ports.values():
            p.close()
        if tcp is not None:
            tcp.close()
        return res
    traffic_runs = fwdtest.Runs()
    pair = _socket_pair() if variant.net_pair else ()
    extra_nets = [_pair_net(nid, mac, pair) if variant.net_pair and nid in PAIR_DEVICES
                  else (nid, extra_ports[nid].netdev_arg(f"n{nid}"), mac, props) for nid, mac, props in fwdtest.DEVICES]
    extra_nets += [(nid, tcp.netdev_arg(nid), mac, props) for nid, mac, props in tcptest.DEVICES]
    cmd = qemu_command(kernel, initrd, variant, server.netdev_arg(), disk,
                       qmp_sock, mem_mib, smp, scratch=scratch, extra_nets=extra_nets)
    # The block checks' extra drives (blkdebug faults, read-only), before -qmp: tools/guestbed/blktest.py.
    cmd[cmd.index("-qmp"):cmd.index("-qmp")] = blktest.qemu_args(workdir)
    # The hotplug root ports and their functions, after every other device (tools/guestbed/hotplug.py).
    cmd[cmd.index("-qmp"):cmd.index("-qmp")] = hotplug.MACHINE_ARGS + hotplug.qemu_args(
        workdir, extra_ports[hotplug.NET_ID].netdev_arg("n" + hotplug.NET_ID))
    if variant.blk_null:
        # Last of all, so every other function keeps its PCI address.
        cmd[cmd.index("-qmp"):cmd.index("-qmp")] = null_blk_args(variant)
    with open(os.path.join(workdir, "qemu-cmd.sh"), "w") as f:
        f.write("#!/bin/sh\n# This boot's QEMU command line. To rerun it by hand, first start "
                "the host side of the net device:\n#   " + server.manual_hint() + "\n"
                + " ".join(shlex.quote(c) for c in cmd) + "\n")
    conlog = open(os.path.join(workdir, "console.log"), "w")
    hostcheck_requests = []

    def note(text):
        line = f"[host] {text}"
        conlog.write(line + "\n")
        conlog.flush()
        if echo_console:
            log(line)

    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            pass_fds=[s.fileno() for s in pair])
    for s in pair:
        s.close()           # QEMU holds both ends now
    console = _Console(proc.stdout)
    tcp.attach()
    qmp = None
    eof = False
    moved = migration.Migration()
    source_eofs_to_skip = 0
    try:
        # QMP smoke test: the socket exists as soon as QEMU runs (unless
        # QEMU refused its command line and exited)
        t_sock = time.monotonic() + 30
        while (not os.path.exists(qmp_sock) and proc.poll() is None
               and time.monotonic() < t_sock):
            time.sleep(0.05)
        try:
            if proc.poll() is not None:
                raise OSError(f"QEMU exited at once with status {proc.returncode}")
            qmp = QMP(qmp_sock, timeout=30, connect_timeout=30)
            st = qmp.execute("query-status")
            ok = st.get("status") in ("running", "prelaunch")
            res.checks.append(("host-qmp", ok, "" if ok else f"query-status: {st}"))
            note(f"qmp query-status: {st}")
        except (OSError, QMPError, RuntimeError, ValueError) as e:
            res.checks.append(("host-qmp", False, f"QMP: {e}"))
            qmp = None

        deadline = t0 + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                res.timed_out = True
                break
            try:
                line = console.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                if source_eofs_to_skip:
                    # The migration's source QEMU quit; the guest runs on in the destination.
                    source_eofs_to_skip -= 1
                    continue
                eof = True
                break
            res.console.append(line)
            conlog.write(line + "\n")
            conlog.flush()
            if echo_console:
                log("guest| " + line)
            if "Kernel panic" in line and not res.panic:
                res.panic = line[line.index("Kernel panic"):].strip()
            m = _CHECK_RE.search(line)
            if m:
                res.checks.append((m.group(2), m.group(1) == "PASS",
                                   (m.group(3) or "").strip()))
                res.guest_checks += 1
                continue
            m = _HOSTCHECK_RE.search(line)
            if m:
                hostcheck_requests.append(m.group(1).split())
                continue
            m = _HOSTREQ_RE.search(line)
            if m and m.group(1).split(None, 1)[0] in fwdtest.KINDS:
                parts = m.group(1).split(None, 3)
                err = traffic_runs.handle(parts[0], parts[1:], extra_ports, note)
                if err:
                    res.checks.append(("host-req", False, err))
                continue
            if m and m.group(1).split(None, 1)[0] in tcptest.REQUESTS:
                err = tcp.handle(m.group(1).split(), server, res.checks, note)
                if err:
                    res.checks.append(("host-req", False, err))
                continue
            if m and m.group(1).split(None, 1)[0] in migration.REQUESTS:
                try:
                    source = proc
                    proc, qmp = migration.migrate(cmd, workdir, qmp, lambda s: _Console(s, console.lines), note, moved)
                    source_eofs_to_skip = 1
                    if moved.ram:
                        res.checks.append(("host-migrate-ram",) + tuple(moved.ram))
                    try:
                        source.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(source.pid, signal.SIGKILL)
                except RuntimeError as e:
                    res.checks.append(("host-migrate", False, str(e)))
                continue
            if m and m.group(1).split(None, 1)[0] in hotplug.REQUESTS:
                err = hotplug.handle_request(m.group(1).split(), qmp, note)
                if err:
                    res.checks.append(("host-req", False, err))
                continue
            if m and m.group(1).split(None, 1)[0] in blktest.REQUESTS:
                err = blktest.handle_request(m.group(1).split(), workdir, qmp, note)
                if err:
                    res.checks.append(("host-req", False, err))
                continue
            if m:
                err = _host_request(m.group(1).split(None, 2), server, qmp, note)
                if err:
                    res.checks.append(("host-req", False, err))
                continue
            if line.strip() == "PLAN DONE":
                res.plan_done = True
    finally:
        if eof:
            try:
                proc.wait(timeout=10)       # the console closed: QEMU is exiting
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            _stop(proc, qmp)
        if qmp is not None:
            qmp.close()
        res.qemu_rc = proc.wait()
        res.wall_s = time.monotonic() - t0
        server.close()
        for p in extra_ports.values():
            p.close()
        tcp.close()
        conlog.close()

    if getattr(server, "error", None):
        res.checks.append(("host-net", False, server.error))
    frames = list(server.frames)
    _write_pcap(os.path.join(workdir, "frames.pcap"), frames)
    for nid, p in extra_ports.items():
        if getattr(p, "error", None):
            res.checks.append((f"host-{nid}", False, p.error))
        _write_pcap(os.path.join(workdir, f"frames-{nid}.pcap"), list(p.frames))
    ctx = hostchecks.BootContext(variant, frames, disk, res.console, workdir)
    ctx.net_ports = extra_ports
    ctx.traffic_runs = traffic_runs
    ctx.migration = moved
    for req in hostcheck_requests:
        res.checks.append(hostchecks.run_requested(ctx, req))
    res.checks.extend(hostchecks.run_post_boot(ctx))
    res.checks.append(_boot_verdict(res, timeout_s, len(hostcheck_requests)))
    return res


def _boot_verdict(res, timeout_s, hostcheck_count):
    if res.timed_out:
        return ("boot", False, f"timed out after {timeout_s} s")
    if res.panic:
        return ("boot", False, res.panic)
    if not res.plan_done:
        return ("boot", False, f"no PLAN DONE before the guest stopped (QEMU exit status {res.qemu_rc})")
    if res.qemu_rc != 0:
        return ("boot", False, f"QEMU exit status {res.qemu_rc}")
    if not res.guest_checks and not hostcheck_count:
        return ("boot", False, "the plan reported no checks")
    return ("boot", True, f"{res.wall_s:.1f} s")


def _host_request(parts, server, qmp, note):
    """Act on `HOSTREQ <kind> ...`; returns an error text or None."""
    kind = parts[0] if parts else ""
    try:
        if kind == "net-send":
            frame = binascii.unhexlify(parts[1])
            count = int(parts[2]) if len(parts) > 2 else 1
            server.send(frame, count)
            note(f"sent {count} frame(s) of {len(frame)} bytes to the guest")
            return None
        if kind == "qmp":
            if qmp is None:
                return "HOSTREQ qmp: no QMP connection"
            command = parts[1]
            args = json.loads(parts[2]) if len(parts) > 2 else {}
            out = qmp.execute(command, **args)
            note(f"qmp {command} {args} -> {out}")
            return None
    except (IndexError, ValueError, binascii.Error, QMPError, OSError) as e:
        return f"HOSTREQ {' '.join(parts)}: {e}"
    return f"unknown HOSTREQ kind {kind!r}"


def _stop(proc, qmp):
    """Ask QEMU to quit, then kill it."""
    if qmp is not None:
        try:
            qmp.execute("quit")
        except (OSError, QMPError, ConnectionError):
            pass
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
