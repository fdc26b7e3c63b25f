"""Host side of the surprise-removal test (Tests/guest/plans/hot-unplug.sh).

Every boot gets two hotplug-capable PCIe root ports (native PCIe hotplug,
pciehp in the guest) holding a virtio-net function (id nethp, MAC
52:54:00:12:34:64, behind its own TCP frame server) and a virtio-blk
function (id blkhp, serial vio-hotplug, hotplug.img through -blockdev so the
drive survives the device's removal). They sit after every other device, so
the others keep their PCI addresses.

The guest drives the removal and the re-plug:

    HOSTREQ qmp device_del {"id": "nethp"}          (boot.py's plain QMP request)
    HOSTREQ hotplug-wait-deleted <id>
        wait (bounded) for QEMU's DEVICE_DELETED event of <id>: the guest
        released the function and QEMU took it away
    HOSTREQ hotplug-add <id>
        device_add with the same properties as at boot
    HOSTCHECK hotplug-frames <min>
        after poweroff: nethp's host side received at least <min> frames
        from MAC :64 (vio-fwd's txonly frames after the re-plug)
    HOSTCHECK hotplug-verify <offset> <length> <bs>
        after poweroff: every block of hotplug.img in the range carries
        vio-fio's verify header for its own offset and a good CRC32C
"""

import json
import os

from . import hostchecks
from .blktest import verify_range
from .qmp import QMPError

NET_ID = "nethp"
NET_MAC = "52:54:00:12:34:64"
BLK_ID = "blkhp"
BLK_SERIAL = "vio-hotplug"
IMAGE = "hotplug.img"
IMAGE_MIB = 32
REQUESTS = ("hotplug-wait-deleted", "hotplug-add")
WAIT_DELETED_S = 180.0

# Native PCIe hotplug on q35 (QEMU 7.2 defaults to ACPI hotplug for root ports).
MACHINE_ARGS = ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]


def device_props():
    """device_add properties of each hotplug function, as at boot. Boolean
    properties are JSON booleans: QMP checks their type (QEMU 10 refuses
    "on" for a bool; disable-legacy is an on/off/auto string)."""
    return {
        NET_ID: {"driver": "virtio-net-pci", "id": NET_ID, "netdev": "n" + NET_ID, "mac": NET_MAC, "bus": "rp" + NET_ID,
                 "disable-legacy": "on", "iommu_platform": True, "ats": True, "romfile": ""},
        BLK_ID: {"driver": "virtio-blk-pci", "id": BLK_ID, "drive": "d" + BLK_ID, "serial": BLK_SERIAL, "bus": "rp" + BLK_ID,
                 "disable-legacy": "on", "iommu_platform": True},
    }


def _device_arg(props):
    """The -device value of the same properties (booleans as on/off)."""
    p = dict(props)
    out = [p.pop("driver")]
    out += [f"{k}={({True: 'on', False: 'off'}[v] if isinstance(v, bool) else v)}" for k, v in p.items()]
    return ",".join(out)


def qemu_args(workdir, net_netdev):
    """Root ports, the two functions, the blk image (created here) and the
    net function's netdev (`net_netdev`: the frame server's -netdev value)."""
    image = hostchecks.create_disk_image(os.path.join(workdir, IMAGE), IMAGE_MIB)
    blockdev = {"driver": "raw", "node-name": "d" + BLK_ID, "file": {"driver": "file", "filename": image}}
    props = device_props()
    return [
        "-device", f"pcie-root-port,id=rp{NET_ID},chassis=41,slot=41",
        "-device", f"pcie-root-port,id=rp{BLK_ID},chassis=42,slot=42",
        "-netdev", net_netdev,
        "-device", _device_arg(props[NET_ID]),
        "-blockdev", json.dumps(blockdev, separators=(",", ":")),
        "-device", _device_arg(props[BLK_ID]),
    ]


def handle_request(parts, qmp, note):
    """HOSTREQ hotplug-wait-deleted <id> / hotplug-add <id>; an error text or None."""
    if qmp is None:
        return f"HOSTREQ {' '.join(parts)}: no QMP connection"
    try:
        kind, dev = parts[0], parts[1]
        if dev not in device_props():
            return f"HOSTREQ {kind}: unknown hotplug device {dev!r}"
        if kind == "hotplug-wait-deleted":
            ev = qmp.wait_event("DEVICE_DELETED", lambda d: d.get("device") == dev, WAIT_DELETED_S)
            if ev is None:
                return f"QEMU sent no DEVICE_DELETED for {dev} within {WAIT_DELETED_S:.0f} s: the guest did not release it"
            note(f"DEVICE_DELETED {dev}")
            return None
        if kind == "hotplug-add":
            out = qmp.execute("device_add", **device_props()[dev])
            note(f"device_add {dev} -> {out}")
            return None
    except (IndexError, QMPError, OSError, ConnectionError) as e:
        return f"HOSTREQ {' '.join(parts)}: {e}"
    return f"unknown HOSTREQ kind {parts[0]!r}"


@hostchecks.hostcheck("hotplug-frames", nargs=1)
def _hotplug_frames(ctx, args):
    want = int(args[0])
    server = getattr(ctx, "net_ports", {}).get(NET_ID)
    if server is None:
        return False, f"no host side for {NET_ID}"
    src = bytes.fromhex(NET_MAC.replace(":", ""))
    got = [f for f in list(server.frames) if len(f) >= 14 and f[6:12] == src and f[12:14] == b"\x88\xb5"]
    if len(got) < want:
        return False, f"{NET_ID}'s host side received {len(got)} txonly frames from {NET_MAC}, want at least {want}"
    return True, f"{len(got)} frames from {NET_MAC} after the re-plug"


@hostchecks.hostcheck("hotplug-verify", nargs=3)
def _hotplug_verify(ctx, args):
    offset, length, bs = (int(a, 0) for a in args)
    with open(os.path.join(ctx.workdir, IMAGE), "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        return False, f"{IMAGE} ends before {offset + length}"
    ok, why = verify_range(data, offset, bs)
    return ok, f"{IMAGE}: {why}"
