"""Device variants: one QEMU boot each.

A variant spec is a base name and optional `:key=value` modifiers:

    split                    default devices, split virtqueues
    packed                   packed=on on both devices
    split:event_idx=off      VIRTIO_F_EVENT_IDX not offered (both devices)
    split:indirect=off       VIRTIO_F_INDIRECT_DESC not offered (both devices)
    split:qsize=256          blk queue-size=256 and net rx/tx_queue_size=256
    split:blk-qsize=64       blk queue-size only (power of two, 4..1024)
    split:net-qsize=512      net rx_queue_size/tx_queue_size only (power of
                             two, 256..1024; QEMU caps tx at 256 unless
                             the backend is vhost-user)
    split:mq=2               blk num-queues=2 and net mq=on with 2 pairs
    split:blk-queues=4       blk num-queues only (QEMU's default: one per vCPU)
    split:net-queues=2       net mq=on,vectors=2N+2,rss=on,hash=on and a 2-queue netdev
                             (needs the tap backend: see boot.py)
    split:net-pair=on        net1 and net2 (fwdtest.DEVICES) joined back to back
                             instead of to their host-side servers: a unix socket
                             pair QEMU inherits (-netdev socket,fd=), so what
                             one sends the other receives,
                             with flow control, nothing dropped (the side-by-side
                             benchmark, Tests/guest/plans/bench-side-by-side.sh;
                             the default plan's forwarding checks need it off)
    split:cpu=max            QEMU -cpu max (TCG's default CPU model lacks
                             SSE4.2, which Debian's DPDK needs: dpdk-testpmd
                             dies of SIGILL without it)
    split:blk-null=on        one more virtio-blk function (serial vio-null) on
                             QEMU's null-co driver (read-zeroes=on, 256 MiB,
                             no file, no thread pool): a fast device for
                             the side-by-side benchmark, so the drivers'
                             cost is not hidden behind blk0's file backend
    split:iommu=off          no vIOMMU (no intel-iommu device, no
                             intel_iommu=on): VFIO cannot work, and the
                             plan checks the fallback to the kernel drivers
                             (Tests/guest/plans/fallback-noiommu.sh)

Modifiers combine: `packed:event_idx=off:indirect=off:blk-qsize=128`.
The spec string is the variant's name (the prefix of its check names).
"""

import re
from dataclasses import dataclass, field

BASES = ("split", "packed")


class VariantError(ValueError):
    pass


def _onoff(key, v):
    if v in ("on", "true", "1", "yes"):
        return True
    if v in ("off", "false", "0", "no"):
        return False
    raise VariantError(f"{key}={v}: expected on or off")


def _pow2(key, v, lo, hi):
    try:
        n = int(v)
    except ValueError:
        raise VariantError(f"{key}={v}: not a number")
    if n < lo or n > hi or n & (n - 1):
        raise VariantError(f"{key}={v}: expected a power of two in {lo}..{hi}")
    return n


def _count(key, v, lo, hi):
    try:
        n = int(v)
    except ValueError:
        raise VariantError(f"{key}={v}: not a number")
    if not lo <= n <= hi:
        raise VariantError(f"{key}={v}: expected {lo}..{hi}")
    return n


@dataclass
class Variant:
    name: str
    packed: bool = False
    event_idx: bool = None          # None: QEMU's default (on)
    indirect: bool = None           # None: QEMU's default (on)
    blk_qsize: int = None
    net_qsize: int = None
    blk_queues: int = None
    net_queues: int = None
    iommu: bool = True
    net_pair: bool = False
    cpu: str = None                 # None: QEMU's default CPU model
    blk_null: bool = False          # one more virtio-blk function on null-co (boot.NULL_BLK_ARGS)
    extra: dict = field(default_factory=dict)

    def _common(self):
        p = []
        if self.packed:
            p.append("packed=on")
        if self.event_idx is not None:
            p.append("event_idx=" + ("on" if self.event_idx else "off"))
        if self.indirect is not None:
            p.append("indirect_desc=" + ("on" if self.indirect else "off"))
        return p

    def net_props(self):
        p = self._common()
        if self.net_qsize:
            p += [f"rx_queue_size={self.net_qsize}", f"tx_queue_size={self.net_qsize}"]
        if self.net_queues and self.net_queues > 1:
            # RSS with hash report (QEMU's software RSS: the taps are vhost=off), for vio-fwd --rss.
            p += ["mq=on", f"vectors={2 * self.net_queues + 2}", "rss=on", "hash=on"]
        return p

    def blk_props(self):
        p = self._common()
        if self.blk_qsize:
            p.append(f"queue-size={self.blk_qsize}")
        if self.blk_queues:
            p.append(f"num-queues={self.blk_queues}")
        return p

    def env(self, smp):
        """GUESTBED_* variables the guest sees (so checks know what to expect).
        QEMU gives virtio-blk-pci one queue per vCPU unless num-queues is set."""
        e = {
            "GUESTBED_VARIANT": self.name,
            "GUESTBED_RING": "packed" if self.packed else "split",
            "GUESTBED_EVENT_IDX": "off" if self.event_idx is False else "on",
            "GUESTBED_INDIRECT": "off" if self.indirect is False else "on",
            "GUESTBED_NET_QUEUES": str(self.net_queues or 1),
            "GUESTBED_BLK_QUEUES": str(self.blk_queues or smp),
            "GUESTBED_IOMMU": "on" if self.iommu else "off",
            "GUESTBED_NET_RSS": "on" if (self.net_queues or 1) > 1 else "off",
            "GUESTBED_NET_PAIR": "on" if self.net_pair else "off",
            "GUESTBED_BLK_NULL": "on" if self.blk_null else "off",
        }
        if self.blk_qsize:
            e["GUESTBED_BLK_QSIZE"] = str(self.blk_qsize)
        if self.net_qsize:
            e["GUESTBED_NET_QSIZE"] = str(self.net_qsize)
        return e


def _apply(v, key, val):
    if key == "packed":
        v.packed = _onoff(key, val)
    elif key == "event_idx":
        v.event_idx = _onoff(key, val)
    elif key == "indirect":
        v.indirect = _onoff(key, val)
    elif key == "qsize":
        v.blk_qsize = _pow2(key, val, 4, 1024)
        v.net_qsize = _pow2(key, val, 256, 1024)
    elif key == "blk-qsize":
        v.blk_qsize = _pow2(key, val, 4, 1024)
    elif key == "net-qsize":
        v.net_qsize = _pow2(key, val, 256, 1024)
    elif key == "mq":
        v.blk_queues = v.net_queues = _count(key, val, 1, 16)
    elif key == "blk-queues":
        v.blk_queues = _count(key, val, 1, 16)
    elif key == "net-queues":
        v.net_queues = _count(key, val, 1, 16)
    elif key == "iommu":
        v.iommu = _onoff(key, val)
    elif key == "net-pair":
        v.net_pair = _onoff(key, val)
    elif key == "blk-null":
        v.blk_null = _onoff(key, val)
    elif key == "cpu":
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", val):
            raise VariantError(f"cpu={val}: expected a QEMU CPU model name such as max or host")
        v.cpu = val
    else:
        raise VariantError(f"unknown variant modifier {key!r}")


def parse(spec, defaults=()):
    """Variant from 'base[:key=value]...'; `defaults` are (key, value) pairs
    applied first (the command line's --queue-size etc.), the spec wins."""
    parts = spec.strip().split(":")
    base = parts[0]
    if base not in BASES:
        raise VariantError(f"unknown variant {base!r} (expected one of {', '.join(BASES)})")
    v = Variant(name=spec.strip(), packed=(base == "packed"))
    for key, val in defaults:
        _apply(v, key, val)
    for mod in parts[1:]:
        if "=" not in mod:
            raise VariantError(f"modifier {mod!r} in {spec!r}: expected key=value")
        key, val = mod.split("=", 1)
        _apply(v, key.strip(), val.strip())
    return v


def parse_list(specs, defaults=()):
    """'split,packed' (or a list of such strings) -> [Variant]."""
    if isinstance(specs, str):
        specs = [specs]
    out = []
    for s in specs:
        for item in s.split(","):
            if item.strip():
                out.append(parse(item, defaults))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise VariantError(f"variant listed twice: {names}")
    return out
