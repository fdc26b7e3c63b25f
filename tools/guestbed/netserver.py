"""Host side of the guest's virtio-net device: every frame the guest sends
is recorded, and the host can send frames to the guest.

FrameServer (default) sits behind QEMU's `-netdev stream,server=off,
addr.type=inet,...`: QEMU connects to it over TCP and carries each Ethernet
frame as a 4-byte big-endian length followed by the frame, both ways.

TapPort sits behind `-netdev tap,queues=N` (multi-queue virtio-net needs a
multi-queue netdev, which the stream netdev is not): QEMU creates the tap
interface, the host captures and injects frames on it with an AF_PACKET
socket. Needs root (CAP_NET_ADMIN) and /dev/net/tun. The host's receive path
takes the 802.1Q tag out of every tagged frame the guest sends (the tag is
then only in PACKET_AUXDATA); TapPort puts it back, so frames are recorded
as the guest sent them.

Both offer the same interface:

    port = FrameServer().start()            # or TapPort(queues=2).start()
    ... qemu ... -netdev <port.netdev_arg("n0")>
    port.send(frame)                        # queued until the link is there
    port.wait_for(lambda f: b"X" in f, timeout=10)
    port.frames                             # every frame received, in order
    port.close()
"""

import fcntl
import os
import socket
import struct
import threading
import time


class _FrameLog:
    """The frames received so far, and waiting on them."""

    def __init__(self):
        self.frames = []                 # frames from the guest, in order
        self.times = []                  # time.monotonic() of each, when it was read
        self.sent = 0                    # frames written to the guest
        self._cv = threading.Condition()
        self._closed = False

    def _record(self, frame):
        with self._cv:
            self.frames.append(frame)
            self.times.append(time.monotonic())
            self._cv.notify_all()

    def received(self, predicate):
        with self._cv:
            return [f for f in self.frames if predicate(f)]

    def contains(self, marker):
        return bool(self.received(lambda f: marker in f))

    def wait_for(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for f in self.frames:
                    if predicate(f):
                        return f
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)


class FrameServer(_FrameLog):
    def __init__(self, host="127.0.0.1", port=0):
        super().__init__()
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, port))
        self._lsock.listen(4)
        self.host, self.port = self._lsock.getsockname()
        self.connections = 0
        self._conn = None
        self._pending = []               # frames to send once connected

    def netdev_arg(self, netdev_id="n0"):
        return (f"stream,id={netdev_id},server=off,addr.type=inet,"
                f"addr.host={self.host},addr.port={self.port}")

    def manual_hint(self):
        return (f"PYTHONPATH=tools python3 -m guestbed.netserver --port {self.port}"
                "   (from the repository root)")

    def start(self):
        threading.Thread(target=self._accept_loop, daemon=True,
                         name="frameserver-accept").start()
        return self

    def _accept_loop(self):
        while not self._closed:
            try:
                conn, _ = self._lsock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cv:
                self._conn = conn
                self.connections += 1
                pending, self._pending = self._pending, []
            for f in pending:
                self._write(conn, f)
            threading.Thread(target=self._read_loop, args=(conn,),
                             daemon=True, name="frameserver-read").start()

    @staticmethod
    def _recv_exact(conn, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _read_loop(self, conn):
        try:
            while True:
                hdr = self._recv_exact(conn, 4)
                if hdr is None:
                    break
                (n,) = struct.unpack(">I", hdr)
                frame = self._recv_exact(conn, n)
                if frame is None:
                    break
                self._record(frame)
        except OSError:
            pass
        finally:
            with self._cv:
                if self._conn is conn:
                    self._conn = None
                self._cv.notify_all()

    def _write(self, conn, frame):
        conn.sendall(struct.pack(">I", len(frame)) + frame)
        with self._cv:
            self.sent += 1

    def send(self, frame, count=1):
        """Send a frame to the guest (queued until QEMU has connected)."""
        for _ in range(count):
            with self._cv:
                conn = self._conn
                if conn is None:
                    self._pending.append(bytes(frame))
                    continue
            try:
                self._write(conn, bytes(frame))
            except OSError:
                with self._cv:
                    self._pending.append(bytes(frame))

    def close(self):
        self._closed = True
        try:
            self._lsock.close()
        except OSError:
            pass
        with self._cv:
            conn = self._conn
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
SIOCSIFTXQLEN = 0x8943
IFF_UP = 0x1
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
_AUXDATA = struct.Struct("=IIIHHHH")


def with_vlan_tag(frame, ancdata):
    """The frame with the 802.1Q tag the kernel moved to PACKET_AUXDATA put
    back after the MAC addresses (unchanged when there was none)."""
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUXDATA.size:
            status, _, _, _, _, tci, tpid = _AUXDATA.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                return frame[:12] + struct.pack(">HH", tpid, tci) + frame[12:]
    return frame


class TapPort(_FrameLog):
    def __init__(self, queues=1, ifname=None, mtu=None, txqueuelen=None):
        super().__init__()
        self.queues = queues
        self.mtu = mtu                   # None: the kernel's default (1500)
        self.txqueuelen = txqueuelen     # frames queued for QEMU before the tap drops (None: default)
        self.ifname = ifname or f"gbtap{os.getpid() % 10000000}"
        self._sock = None
        self._pending = []
        self.error = None
        self.capture_drops = 0           # frames the capture socket's buffer overflowed on
        self._tap_tx_dropped = 0

    def netdev_arg(self, netdev_id="n0"):
        return (f"tap,id={netdev_id},ifname={self.ifname},script=no,downscript=no,"
                f"queues={self.queues},vhost=off")

    def manual_hint(self):
        return f"nothing: QEMU creates the tap {self.ifname} (as root)"

    def start(self):
        if not os.path.exists("/dev/net/tun"):
            raise OSError("/dev/net/tun does not exist: the tap backend cannot work here")
        threading.Thread(target=self._run, daemon=True, name="tapport").start()
        return self

    def _bring_up(self):
        """Wait for QEMU to create the interface; no IPv6, link up."""
        deadline = time.monotonic() + 120
        while not os.path.exists(f"/sys/class/net/{self.ifname}"):
            if self._closed or time.monotonic() > deadline:
                raise OSError(f"tap interface {self.ifname} never appeared")
            time.sleep(0.05)
        try:
            with open(f"/proc/sys/net/ipv6/conf/{self.ifname}/disable_ipv6", "w") as f:
                f.write("1")
        except OSError:
            pass
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            if self.mtu:
                fcntl.ioctl(s, SIOCSIFMTU, struct.pack("16si20x", self.ifname.encode(), self.mtu))
            if self.txqueuelen:
                fcntl.ioctl(s, SIOCSIFTXQLEN, struct.pack("16si20x", self.ifname.encode(), self.txqueuelen))
            ifr = struct.pack("16sH22x", self.ifname.encode(), 0)
            flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", self.ifname.encode(),
                                                     flags | IFF_UP))

    def _run(self):
        try:
            self._bring_up()
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            # Room for bursts of jumbo frames while this thread waits for the GIL.
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
            sock.bind((self.ifname, 0))
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            sock.settimeout(0.5)
            with self._cv:
                self._sock = sock
                pending, self._pending = self._pending, []
            for f in pending:
                self._write(f)
        except OSError as e:
            if not self._closed:
                self.error = f"tap {self.ifname}: {e}"
            return
        while not self._closed:
            try:
                frame, anc, _, addr = sock.recvmsg(65536, socket.CMSG_SPACE(_AUXDATA.size))
            except socket.timeout:
                self._count_drops(sock)
                continue
            except OSError:
                return          # the interface went away: QEMU has exited
            if addr[2] != PACKET_OUTGOING:       # not our own injections
                self._record(with_vlan_tag(frame, anc))

    def tx_dropped(self):
        """Frames the tap dropped on their way to QEMU (its reader was too
        slow), as last seen while the tap existed."""
        return self._tap_tx_dropped

    def _count_drops(self, sock):
        try:
            with open(f"/sys/class/net/{self.ifname}/statistics/tx_dropped") as f:
                self._tap_tx_dropped = max(self._tap_tx_dropped, int(f.read()))
        except (OSError, ValueError):
            pass
        try:
            _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            self.capture_drops += drops          # the kernel resets them on read
        except OSError:
            pass

    def _write(self, frame):
        self._sock.send(frame)
        with self._cv:
            self.sent += 1

    def send(self, frame, count=1):
        """Send a frame to the guest (queued until the tap is up)."""
        for _ in range(count):
            with self._cv:
                if self._sock is None:
                    self._pending.append(bytes(frame))
                    continue
            self._write(bytes(frame))

    def close(self):
        self._closed = True
        with self._cv:
            sock = self._sock
        if sock is not None:
            self._count_drops(sock)
            try:
                sock.close()
            except OSError:
                pass


def ethernet_frame(dst, src, ethertype, payload, pad_to=60):
    """dst/src as 'aa:bb:..' strings; pads to the 60-byte Ethernet minimum."""
    mac = lambda s: bytes(int(x, 16) for x in s.split(":"))
    f = mac(dst) + mac(src) + struct.pack(">H", ethertype) + payload
    return f + b"\0" * max(0, pad_to - len(f))


def main(argv=None):
    """A standalone frame server, for rerunning a boot's qemu-cmd.sh by hand:
    prints every frame the guest sends."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    srv = FrameServer(port=a.port).start()
    print(f"frame server on 127.0.0.1:{srv.port}; Ctrl-C to stop", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            for f in srv.received(lambda f: True)[seen:]:
                seen += 1
                print(f"frame {seen}: {len(f)} bytes {f[:64].hex()}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()


if __name__ == "__main__":
    main()
