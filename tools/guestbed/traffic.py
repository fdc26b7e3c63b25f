"""Test traffic for the packet forwarder (vio-fwd): frames the receiver can
prove arrived whole, once, and in order per flow.

Each frame is Ethernet + IPv4 + UDP (so multi-queue devices and AF_PACKET
fanout spread flows by their 5-tuple hash, each flow staying on one queue),
with a payload that starts

    magic "VIOT" | run id (4) | flow (2) | sequence in flow (4) |
    frame length (2) | CRC-32 of the rest of the frame after this header (4)

followed by filler derived from (run, flow, seq). Frame sizes cycle through
64 ... 1514 bytes (and jumbo sizes when the path's MTU allows); several flows
are interleaved. A flow may have its own destination MAC and an 802.1Q tag
(TPID 0x8100 before the IPv4 EtherType; `Target`), for receive-filter tests.

Used by the guest test bed (host side of `HOSTREQ net-traffic`, see
hostchecks.py) and by the host-only kernel-path test (Tests/net/veth-fwd):

    python3 -m guestbed.traffic send --ifname veth-a --count 3000 --rate 2000 --run-id 7
    python3 -m guestbed.traffic recv --ifname veth-b --run-id 7 --count 3000 --out r.json
"""

import json
import socket
import struct
import time
import zlib

MAGIC = b"VIOT"
HDR = struct.Struct(">4sIHIHI")          # magic, run, flow, seq, length, crc
ETH_IP_UDP = 14 + 20 + 8
PAYLOAD_OFF = ETH_IP_UDP
MIN_FRAME = ETH_IP_UDP + HDR.size        # 62
SIZES = [64, 65, 66, 100, 127, 128, 129, 256, 511, 512, 513, 777, 1000, 1023, 1024, 1280, 1400, 1499, 1500, 1513, 1514]
JUMBO_SIZES = [1515, 2048, 4000, 8000, 9014]
SRC_MAC = bytes.fromhex("020000000a01")
DST_MAC = bytes.fromhex("020000000b02")
ETH_P_ALL = 0x0003
TPID_8021Q = 0x8100


class Target:
    """Where one flow's frames go: a destination MAC and an optional VLAN id
    (the frame then carries an 802.1Q tag, priority 0). `filtered`: the test
    expects the receiver's device to drop them (receive-filter tests)."""

    def __init__(self, mac=None, vlan=None, filtered=False):
        self.mac = bytes.fromhex(mac.replace(":", "")) if isinstance(mac, str) else (mac or DST_MAC)
        if len(self.mac) != 6:
            raise ValueError(f"target MAC {mac!r}: want 6 bytes, aa:bb:cc:dd:ee:ff")
        if vlan is not None and not 0 <= int(vlan) <= 4095:
            raise ValueError(f"target VLAN {vlan!r}: want 0 ... 4095")
        self.vlan = None if vlan is None else int(vlan)
        self.filtered = bool(filtered)

    @classmethod
    def from_json(cls, d):
        return cls(d.get("mac"), d.get("vlan"), d.get("filtered", False))

    def __str__(self):
        mac = ":".join(f"{b:02x}" for b in self.mac)
        return mac + (f" vlan {self.vlan}" if self.vlan is not None else "")


def payload_offset(fr):
    """Where the UDP payload starts: after an 802.1Q tag when the frame has one."""
    return PAYLOAD_OFF + 4 if fr[12:14] == struct.pack(">H", TPID_8021Q) else PAYLOAD_OFF


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(run, flow, seq, length, target=None):
    """One test frame of `length` bytes (>= 62, >= 66 with a VLAN tag)."""
    tag = b"" if target is None or target.vlan is None else struct.pack(">HH", TPID_8021Q, target.vlan)
    assert MIN_FRAME + len(tag) <= length <= 65535
    fill_len = length - PAYLOAD_OFF - len(tag) - HDR.size
    seed = (run * 2654435761 + flow * 40503 + seq * 97) & 0xFFFFFFFF
    filler = bytes(((seed >> (i % 24)) + i) & 0xFF for i in range(fill_len))
    crc = zlib.crc32(filler)
    payload = HDR.pack(MAGIC, run, flow, seq, length, crc) + filler
    udp_len = 8 + len(payload)
    src_ip = bytes([10, 99, 0, 1])
    dst_ip = bytes([10, 99, 0, 2])
    sport, dport = 40000 + flow, 50000 + (flow * 7) % 1000
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, seq & 0xFFFF, 0, 64, 17, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack(">H", _csum(ip)) + ip[12:]
    pseudo = src_ip + dst_ip + struct.pack(">BBH", 0, 17, udp_len)
    udp = struct.pack(">HHHH", sport, dport, udp_len, 0)
    c = _csum(pseudo + udp + payload) or 0xFFFF
    udp = struct.pack(">HHHH", sport, dport, udp_len, c)
    dst = DST_MAC if target is None else target.mac
    return dst + SRC_MAC + tag + b"\x08\x00" + ip + udp + payload


def plan(run, count, flows=4, jumbo=False, targets=None):
    """[(flow, seq, frame)] in send order: flows interleaved round-robin,
    sizes cycling through SIZES (+ JUMBO_SIZES). `targets`: one Target per
    flow (then flows = len(targets)); tagged frames are at least 66 bytes."""
    if targets:
        flows = len(targets)
    sizes = SIZES + (JUMBO_SIZES if jumbo else [])
    out = []
    next_seq = [0] * flows
    for i in range(count):
        f = i % flows
        t = targets[f] if targets else None
        length = max(sizes[i % len(sizes)], MIN_FRAME + (4 if t is not None and t.vlan is not None else 0))
        out.append((f, next_seq[f], frame(run, f, next_seq[f], length, t)))
        next_seq[f] += 1
    return out


def parse(fr, run, sent=None):
    """(flow, seq, ok, reason) for a test frame of this run, None for others.
    `sent`: {(flow, seq): frame as sent}, to compare the headers with (else
    they are compared with an untagged frame to DST_MAC)."""
    off = payload_offset(fr)
    if len(fr) < off + HDR.size or fr[off:off + 4] != MAGIC:
        return None
    magic, r, flow, seq, length, crc = HDR.unpack_from(fr, off)
    if r != run:
        return None
    if length != len(fr):
        return flow, seq, False, f"length {len(fr)}, sent {length}"
    if zlib.crc32(fr[off + HDR.size:]) != crc:
        return flow, seq, False, "payload changed (CRC-32 mismatch)"
    want = sent.get((flow, seq)) if sent is not None else frame(run, flow, seq, length)
    if want != fr:
        return flow, seq, False, "headers changed" if want is not None else "never sent"
    return flow, seq, True, ""


class Verdict:
    """What the receiver saw of one run."""

    def __init__(self, run, sent, absent_flows=()):
        self.run = run
        self.sent = sent                # [(flow, seq, frame)]
        self.by_key = {(f, s): fr for f, s, fr in sent}
        self.absent_flows = set(absent_flows)   # flows that must not arrive at all (filtered)
        self.seen = {}                  # (flow, seq) -> count
        self.last = {}                  # flow -> last seq
        self.corrupt = []
        self.reordered = []
        self.duplicates = []

    def feed(self, fr):
        p = parse(fr, self.run, self.by_key)
        if p is None:
            return False
        flow, seq, ok, reason = p
        if not ok:
            self.corrupt.append(f"flow {flow} seq {seq}: {reason}")
            return True
        key = (flow, seq)
        if key in self.seen:
            self.duplicates.append(f"flow {flow} seq {seq}")
        self.seen[key] = self.seen.get(key, 0) + 1
        if flow in self.last and seq <= self.last[flow] and self.seen[key] == 1:
            self.reordered.append(f"flow {flow}: seq {seq} after {self.last[flow]}")
        self.last[flow] = max(seq, self.last.get(flow, -1))
        return True

    @property
    def received(self):
        return len(self.seen)

    @property
    def expected(self):
        """The frames that should arrive (those of flows not in absent_flows)."""
        return [(f, s) for f, s, _ in self.sent if f not in self.absent_flows]

    @property
    def missing(self):
        return [(f, s) for f, s in self.expected if (f, s) not in self.seen]

    @property
    def unexpected(self):
        """Frames of absent flows that arrived anyway."""
        return sorted(k for k in self.seen if k[0] in self.absent_flows)

    def summary(self, explained_losses=0):
        """(ok, text): every frame arrived intact and once, per-flow order
        kept; or the frames that did not arrive are at most the losses the
        forwarder counted (`explained_losses`)."""
        missing = self.missing
        problems = []
        if self.corrupt:
            problems.append(f"{len(self.corrupt)} corrupt ({'; '.join(self.corrupt[:3])})")
        if self.duplicates:
            problems.append(f"{len(self.duplicates)} duplicate(s) ({', '.join(self.duplicates[:3])})")
        if self.reordered:
            problems.append(f"{len(self.reordered)} out of order ({'; '.join(self.reordered[:3])})")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} frame(s) arrived that should have been filtered "
                            f"({', '.join(f'flow {f} seq {s}' for f, s in self.unexpected[:3])})")
        if len(missing) > explained_losses:
            problems.append(f"{len(missing)} missing, only {explained_losses} counted as dropped by the forwarder "
                            f"(first missing: {', '.join(f'flow {f} seq {s}' for f, s in missing[:3])})")
        flows = len({f for f, _, _ in self.sent})
        sizes = [len(fr) for _, _, fr in self.sent]
        text = (f"{self.received}/{len(self.sent)} frames of {flows} flows, sizes {min(sizes) if sizes else 0}..{max(sizes) if sizes else 0}, "
                f"{len(missing)} missing ({explained_losses} dropped by the forwarder), 0 corrupt, 0 duplicate, order kept"
                if not problems else "; ".join(problems))
        return not problems, text


class Pacer:
    """Sends at most `rate` frames per second (bounded offered load)."""

    def __init__(self, rate):
        self.rate = rate
        self.t0 = time.monotonic()
        self.n = 0

    def wait(self):
        if self.rate <= 0:
            return
        self.n += 1
        ahead = self.n / self.rate - (time.monotonic() - self.t0)
        if ahead > 0.002:
            time.sleep(ahead)


def send(send_fn, frames, rate):
    p = Pacer(rate)
    for _, _, fr in frames:
        send_fn(fr)
        p.wait()


def _packet_socket(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return s


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="send or receive vio-fwd test traffic on an interface (AF_PACKET)")
    ap.add_argument("role", choices=("send", "recv"))
    ap.add_argument("--ifname", required=True)
    ap.add_argument("--run-id", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--flows", type=int, default=4)
    ap.add_argument("--rate", type=float, default=1000, help="frames per second (send)")
    ap.add_argument("--jumbo", action="store_true")
    ap.add_argument("--idle", type=float, default=3.0, help="recv: stop after this long without a test frame")
    ap.add_argument("--timeout", type=float, default=120.0, help="recv: stop after this long in all")
    ap.add_argument("--ready", help="recv: create this file once the socket is open")
    ap.add_argument("--out", help="recv: write the result here as JSON")
    ap.add_argument("--macswap", action="store_true", help="recv: frames come back with source and destination MAC swapped")
    a = ap.parse_args(argv)
    frames = plan(a.run_id, a.count, a.flows, a.jumbo)
    if a.role == "send":
        s = _packet_socket(a.ifname)
        send(s.send, frames, a.rate)
        print(f"sent {len(frames)} frames on {a.ifname}", flush=True)
        return 0
    s = _packet_socket(a.ifname)
    s.settimeout(0.2)
    if a.ready:
        open(a.ready, "w").close()
    v = Verdict(a.run_id, frames)
    t_end = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < t_end:
        try:
            fr, addr = s.recvfrom(65536)
        except socket.timeout:
            if last is not None and time.monotonic() - last > a.idle:
                break
            continue
        if addr[2] == 4:                 # PACKET_OUTGOING: not ours to judge
            continue
        if a.macswap and len(fr) >= 12:
            fr = fr[6:12] + fr[0:6] + fr[12:]
        if v.feed(fr):
            last = time.monotonic()
            if v.received >= len(frames) and not v.corrupt:
                break
    result = {"received": v.received, "sent": len(frames), "missing": len(v.missing),
              "corrupt": v.corrupt[:10], "duplicates": v.duplicates[:10], "reordered": v.reordered[:10]}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
