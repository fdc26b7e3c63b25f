"""Host-side checks.

Two ways in:

1. The guest asks: a console line `HOSTCHECK <kind> <args...>` is recorded
   during the boot and verified after poweroff by the handler registered for
   <kind>. The check is named `host-<kind>` (`host-<kind>-<label>` when the
   guest gives a label as the last argument).

       HOSTCHECK net-rx <hex> [label]
           some frame the host received from the guest contains <hex>
       HOSTCHECK blk-data <offset> <hex> [label]
           the disk image holds <hex> at byte <offset>
       HOSTCHECK blk-pattern <lba> <count> [label]
           sectors lba..lba+count-1 still hold the image's initial pattern

2. Post-boot hooks: functions registered with @post_boot run after every
   boot and may yield any number of (name, ok, reason) results, e.g. a scan
   of the whole disk image. They see the same BootContext.

A handler, registered with @hostcheck(kind, nargs), gets (ctx, args) with
exactly nargs arguments and returns (ok, reason).
"""

import binascii

SECTOR = 512
PATTERN_MAGIC = b"GUESTBED"

_handlers = {}
_post_boot = []


class BootContext:
    """What host-side checks can look at after a boot."""

    def __init__(self, variant, frames, disk_image, console_lines, workdir):
        self.variant = variant            # variants.Variant
        self.frames = frames              # frames the host received, in order
        self.disk_image = disk_image      # path of the raw image (kept)
        self.console_lines = console_lines
        self.workdir = workdir

    def read_disk(self, offset, length):
        with open(self.disk_image, "rb") as f:
            f.seek(offset)
            return f.read(length)


def hostcheck(kind, nargs):
    def register(fn):
        _handlers[kind] = (fn, nargs)
        return fn
    return register


def post_boot(fn):
    _post_boot.append(fn)
    return fn


def sector_pattern(lba):
    """The initial content of sector `lba` of a fresh disk image:
    'GUESTBED' + lba (8 bytes little-endian) + bytes (lba + i) & 0xff for
    i = 16..511."""
    head = PATTERN_MAGIC + lba.to_bytes(8, "little")
    return head + bytes((lba + i) & 0xFF for i in range(16, SECTOR))


def create_disk_image(path, size_mib=64):
    """A raw image where every sector holds sector_pattern(lba)."""
    ramp = bytes(i & 0xFF for i in range(SECTOR + 256))
    with open(path, "wb") as f:
        for lba in range(size_mib * 1024 * 1024 // SECTOR):
            off = (lba + 16) & 0xFF
            f.write(PATTERN_MAGIC + lba.to_bytes(8, "little")
                    + ramp[off:off + SECTOR - 16])
    return path


def _unhex(s):
    try:
        return binascii.unhexlify(s)
    except (binascii.Error, ValueError):
        raise ValueError(f"bad hex {s!r}")


@hostcheck("net-rx", nargs=1)
def _net_rx(ctx, args):
    marker = _unhex(args[0])
    hits = sum(1 for f in ctx.frames if marker in f)
    if hits:
        return True, f"{hits} frame(s)"
    return False, (f"no frame among the {len(ctx.frames)} the host received "
                   f"contains {args[0]}")


@hostcheck("blk-data", nargs=2)
def _blk_data(ctx, args):
    offset, want = int(args[0], 0), _unhex(args[1])
    got = ctx.read_disk(offset, len(want))
    if got == want:
        return True, ""
    return False, f"image at {offset} holds {got.hex()}, expected {want.hex()}"


@hostcheck("blk-pattern", nargs=2)
def _blk_pattern(ctx, args):
    lba, count = int(args[0], 0), int(args[1], 0)
    data = ctx.read_disk(lba * SECTOR, count * SECTOR)
    for i in range(count):
        if data[i * SECTOR:(i + 1) * SECTOR] != sector_pattern(lba + i):
            return False, f"sector {lba + i} no longer holds its initial pattern"
    return True, ""


def run_requested(ctx, request_args):
    """Verify one HOSTCHECK line's arguments: -> (name, ok, reason)."""
    if not request_args:
        return "host-check", False, "empty HOSTCHECK line"
    kind, args = request_args[0], request_args[1:]
    name = f"host-{kind}"
    if kind not in _handlers:
        return name, False, f"unknown HOSTCHECK kind {kind!r}"
    fn, arity = _handlers[kind]
    if len(args) < arity:
        return name, False, f"HOSTCHECK {kind} needs {arity} argument(s), got {args}"
    if len(args) > arity:
        name += "-" + args[arity]
    try:
        ok, reason = fn(ctx, args[:arity])
    except (ValueError, OSError) as e:
        ok, reason = False, str(e)
    return name, ok, reason


def run_post_boot(ctx):
    out = []
    for fn in _post_boot:
        try:
            out.extend(fn(ctx) or [])
        except Exception as e:  # a broken hook is a failed check, not a crash
            out.append((f"host-hook-{fn.__name__}", False, repr(e)))
    return out
