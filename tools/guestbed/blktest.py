"""The block checks' host side: extra drives, host requests, host checks.

Drives (after blk0 and the scratch disk, so they get later PCI addresses;
plans find them by serial, /sys/block/*/serial while on virtio_blk):

    vio-faulty  8 MiB, raw over QEMU's blkdebug over a file, discard=unmap:
                reads touching sector FAULT_READ_SECTOR and writes touching
                FAULT_WRITE_SECTOR fail with EIO (VIRTIO_BLK_S_IOERR in the
                guest); the rest of the drive works.
    vio-ro      4 MiB, readonly=on: QEMU offers VIRTIO_BLK_F_RO.

Both start with hostchecks.sector_pattern, like disk.img.

Host requests (while the guest runs):
    HOSTREQ blk-snapshot <label> <offset> <length>
        copies that range of disk.img as it is now (snapshot-<label>.bin)
        and records QEMU's counters of blk0 (query-blockstats) with it; then
        acknowledges by growing vio-faulty to FAULTY_MIB MiB + n sectors (the
        n-th snapshot), which the guest waits to see (/sys/block/*/size), so
        the snapshot is taken exactly between what the guest did before and
        after the request.

Host checks (after poweroff; none trusts the guest's word, only its
directions):
    HOSTCHECK blk-verify <offset> <length> <bs> [label]
        every bs-byte block of disk.img in the range carries a valid
        vio-fio verify header for its own offset and a matching CRC-32C
    HOSTCHECK blk-zero <offset> <length> <drive> [label]
        the range of drive (d0, faulty) reads as zeroes
    HOSTCHECK blk-drive-pattern <drive> <lba> <count> [label]
        sectors of drive (d0, faulty, ro) still hold their initial pattern
    HOSTCHECK blk-flush <before> <after> <bs> [label]
        between snapshots <before> and <after> blk0 completed at least one
        flush, and snapshot <after> (taken once the guest's flush had
        completed, before poweroff) verifies as blk-verify does
"""

import json
import os
import struct

from . import hostchecks
from .hostchecks import hostcheck, sector_pattern, SECTOR

FAULT_READ_SECTOR = 2048     # byte 1 MiB
FAULT_WRITE_SECTOR = 4096    # byte 2 MiB
FAULTY_MIB = 8
RO_MIB = 4

DRIVE_FILES = {"d0": "disk.img", "faulty": "faulty.img", "ro": "ro.img"}


def qemu_args(workdir):
    """The extra drives' QEMU arguments (creates their images)."""
    faulty = hostchecks.create_disk_image(os.path.join(workdir, "faulty.img"), FAULTY_MIB)
    ro = hostchecks.create_disk_image(os.path.join(workdir, "ro.img"), RO_MIB)
    blockdev = {
        "driver": "raw", "node-name": "faulty", "discard": "unmap",
        "file": {
            "driver": "blkdebug",
            "inject-error": [
                {"event": "read_aio", "iotype": "read", "errno": 5, "sector": FAULT_READ_SECTOR},
                {"event": "write_aio", "iotype": "write", "errno": 5, "sector": FAULT_WRITE_SECTOR},
            ],
            "image": {"driver": "file", "filename": faulty, "discard": "unmap"},
        },
    }
    common = "disable-legacy=on,iommu_platform=on"
    return [
        "-blockdev", json.dumps(blockdev, separators=(",", ":")),
        # request-merging=off: QEMU would otherwise merge neighbouring requests
        # and fail all of them together; the checks count exactly one failure.
        "-device", f"virtio-blk-pci,id=blkfaulty,drive=faulty,serial=vio-faulty,request-merging=off,{common}",
        "-drive", f"file={ro},if=none,id=dro,format=raw,readonly=on",
        "-device", f"virtio-blk-pci,id=blkro,drive=dro,serial=vio-ro,{common}",
    ]


# ---- host requests --------------------------------------------------------------

REQUESTS = ("blk-snapshot",)


def handle_request(parts, workdir, qmp, note):
    """HOSTREQ blk-snapshot <label> <offset> <length>; returns an error text or None."""
    try:
        kind, label, offset, length = parts[0], parts[1], int(parts[2], 0), int(parts[3], 0)
    except (IndexError, ValueError):
        return f"HOSTREQ {' '.join(parts)}: want blk-snapshot <label> <offset> <length>"
    if kind != "blk-snapshot" or "/" in label:
        return f"HOSTREQ {' '.join(parts)}: unknown"
    with open(os.path.join(workdir, "disk.img"), "rb") as f:
        f.seek(offset)
        data = f.read(length)
    with open(os.path.join(workdir, f"snapshot-{label}.bin"), "wb") as f:
        f.write(data)
    stats = {}
    if qmp is not None:
        for dev in qmp.execute("query-blockstats"):
            if dev.get("device") == "d0" or "blk0" in dev.get("qdev", ""):
                stats = dev.get("stats", {})
    meta = {"offset": offset, "length": length, "stats": stats}
    with open(os.path.join(workdir, f"snapshot-{label}.json"), "w") as f:
        json.dump(meta, f)
    note(f"blk-snapshot {label}: {length} bytes at {offset}, blk0 flushes "
         f"{stats.get('flush_operations', '?')}, writes {stats.get('wr_operations', '?')}")
    # Acknowledge: grow vio-faulty by one sector per snapshot. The guest waits
    # for its kernel to see the new size, so it never runs ahead of the host.
    if qmp is not None:
        n = len([f for f in os.listdir(workdir) if f.startswith("snapshot-") and f.endswith(".json")])
        size = FAULTY_MIB * 1024 * 1024 + n * SECTOR
        qmp.execute("block_resize", **{"node-name": "faulty", "size": size})
        note(f"blk-snapshot {label}: acknowledged (vio-faulty is now {size} bytes)")
    return None


# ---- host checks ----------------------------------------------------------------

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli), as vio-fio's (and Linux's crc32c)."""
    c = crc ^ 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


VERIFY_MAGIC = 0x464F4956   # "VIOF"


def verify_block(block, offset):
    """None when `block` is a valid vio-fio verify block for `offset`, else why not
    (the header layout is documented in Sources/Tools/vio-fio/Verify.swift)."""
    if len(block) < 32:
        return f"block at {offset} is only {len(block)} bytes"
    magic, length, at, _seed, stored, _pad = struct.unpack_from("<IIQQII", block, 0)
    if magic != VERIFY_MAGIC:
        return f"block at {offset}: no vio-fio header (magic 0x{magic:08x})"
    if length != len(block):
        return f"block at {offset}: header length {length}, expected {len(block)}"
    if at != offset:
        return f"block at {offset}: header names offset {at}"
    actual = crc32c(block[32:], crc32c(block[:24]))
    if actual != stored:
        return f"block at {offset}: crc32c 0x{actual:08x} != stored 0x{stored:08x}"
    return None


def verify_range(data, base, bs):
    bad = []
    for i in range(0, len(data) - len(data) % bs, bs):
        why = verify_block(data[i:i + bs], base + i)
        if why:
            bad.append(why)
    blocks = len(data) // bs
    if bad:
        return False, f"{len(bad)} of {blocks} blocks bad, first: {bad[0]}"
    return True, f"{blocks} blocks of {bs} bytes verified in the image"


def _drive_path(ctx, drive):
    name = DRIVE_FILES.get(drive)
    if name is None:
        raise ValueError(f"unknown drive {drive!r} (expected {', '.join(DRIVE_FILES)})")
    return os.path.join(ctx.workdir, name)


def _read(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


@hostcheck("blk-verify", nargs=3)
def _blk_verify(ctx, args):
    offset, length, bs = (int(a, 0) for a in args)
    data = ctx.read_disk(offset, length)
    if len(data) != length:
        return False, f"the image ends before {offset + length}"
    return verify_range(data, offset, bs)


@hostcheck("blk-zero", nargs=3)
def _blk_zero(ctx, args):
    offset, length = int(args[0], 0), int(args[1], 0)
    data = _read(_drive_path(ctx, args[2]), offset, length)
    if len(data) != length:
        return False, f"{args[2]} ends before {offset + length}"
    nz = next((i for i, b in enumerate(data) if b), None)
    if nz is not None:
        return False, f"{args[2]} byte {offset + nz} is 0x{data[nz]:02x}, not zero"
    return True, f"{length} bytes of zeroes"


@hostcheck("blk-drive-pattern", nargs=3)
def _blk_drive_pattern(ctx, args):
    path = _drive_path(ctx, args[0])
    lba, count = int(args[1], 0), int(args[2], 0)
    data = _read(path, lba * SECTOR, count * SECTOR)
    for i in range(count):
        if data[i * SECTOR:(i + 1) * SECTOR] != sector_pattern(lba + i):
            return False, f"{args[0]} sector {lba + i} no longer holds its initial pattern"
    return True, f"{count} sectors untouched"


@hostcheck("blk-flush", nargs=3)
def _blk_flush(ctx, args):
    before, after, bs = args[0], args[1], int(args[2], 0)
    try:
        with open(os.path.join(ctx.workdir, f"snapshot-{before}.json")) as f:
            b = json.load(f)
        with open(os.path.join(ctx.workdir, f"snapshot-{after}.json")) as f:
            a = json.load(f)
        with open(os.path.join(ctx.workdir, f"snapshot-{after}.bin"), "rb") as f:
            data = f.read()
    except OSError as e:
        return False, f"snapshot missing (did the guest send HOSTREQ blk-snapshot?): {e}"
    fb = b["stats"].get("flush_operations")
    fa = a["stats"].get("flush_operations")
    if fb is None or fa is None:
        return False, "QEMU's blockstats for blk0 were not recorded"
    if fa <= fb:
        return False, f"blk0 completed no flush between the snapshots ({fb} then {fa})"
    ok, why = verify_range(data, a["offset"], bs)
    return ok, f"{fa - fb} flush(es); snapshot after the flush: {why}"


def host_binaries():
    """Host programs the block checks run in the guest (their shared
    libraries come along): the real fio, when installed."""
    return [p for p in ("/usr/bin/fio",) if os.path.exists(p)]


# The example log's format: Examples/BlockLog/Sources/BlockLog/Format.swift.
LOG_SUPER_MAGIC = 0x31474F4C424F4956   # "VIOBLOG1"
LOG_RECORD_MAGIC = 0x4345524C          # "LREC"


@hostcheck("blk-log", nargs=2)
def _blk_log(ctx, args):
    """blk-log <drive> <records>: the drive holds an Examples/BlockLog log whose
    first <records> records are intact (superblock CRC, consecutive sequence
    numbers, this log's id, non-decreasing epochs, record CRC-32C)."""
    path, want = _drive_path(ctx, args[0]), int(args[1], 0)
    sb = _read(path, 0, SECTOR)
    magic, version, bs, log_id, _epoch, crc = struct.unpack_from("<QIIQII", sb, 0)
    if magic != LOG_SUPER_MAGIC or crc != crc32c(sb[:28]):
        return False, f"{args[0]}: no valid block-log superblock"
    block, epoch = 1, 0
    for seq in range(1, want + 1):
        head = _read(path, block * bs, 32)
        m, length, lid, s, e, rcrc = struct.unpack_from("<IIQQII", head, 0)
        if m != LOG_RECORD_MAGIC or lid != log_id or s != seq or e < epoch:
            return False, f"{args[0]}: record {seq} missing at block {block}"
        payload = _read(path, block * bs + 32, length)
        if crc32c(payload, crc32c(head[:28])) != rcrc:
            return False, f"{args[0]}: record {seq} fails its CRC-32C"
        epoch = e
        block += (32 + length + bs - 1) // bs
    return True, f"{want} records intact, {bs}-byte blocks"
