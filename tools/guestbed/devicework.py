"""The device model's work per frame, counted from QEMU's own trace.

Under TCG, QEMU's main loop moves every frame of the in-guest benchmark
(tools/bench/guest-bench), so the drivers compete on how much work they make
it do per frame. Its trace counts that work, and counts repeat run to run
where rates do not (a rate spreads ±25 % on a shared 2-core host; a count
does not move in the fourth digit). tools/bench/guest-trace boots the
benchmark with these events on (log backend, `-msg timestamp=on`):

  vtd_iotlb_page_hit / vtd_iotlb_page_update   an IOMMU translation (hit / walk)
  virtqueue_pop                                one buffer taken from a ring
  virtio_queue_notify                          a doorbell
  virtio_notify                                an interrupt sent to the guest
  memory_region_ops_read / _write              an MMIO access (by region)

Behind the vIOMMU every access QEMU makes to a ring goes through a
translation (its ring caches do not hold IOMMU memory), so translations per
frame are the device model's ring accesses plus its buffer maps. A page
translated at least `RING_PAGE_SHARE` times per frame is a ring page (a
descriptor or event area, touched for every frame or every batch); the rest
are buffers (a buffer page is hit a few times in a thousand frames).

    python3 -m guestbed.devicework TRACE CONSOLE    (from tools/)

Runs are the stretches of virtqueue_pop events separated by a pause
(`GAP_S`: the benchmark stops one tool and starts the next); they are matched
in order to the console's `BENCH net` lines, and a stretch whose pops do not
come to two per frame sent (one TX, one RX) is refused, not guessed.
"""

import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field

GAP_S = 0.25
RING_PAGE_SHARE = 0.05
POPS_PER_FRAME = 2
# Frames sent and pops counted differ by the frames still in flight when a
# tool stops (up to 64 seeded in io forwarding) and the seed itself.
POP_SLACK_FRAMES = 256

_EVENT = re.compile(r"^\d+@(\d+\.\d+):(\w+) ?(.*)$")
_HIT = re.compile(r"\bsid (0x[0-9a-f]+) iova (0x[0-9a-f]+)")
_REGION = re.compile(r"name '([^']*)'")
_BENCH = re.compile(r"BENCH net (.*)$")


class TraceError(ValueError):
    """The trace and the console do not line up; the message says how."""


@dataclass
class Stretch:
    pops: int = 0
    pages: Counter = field(default_factory=Counter)  # (sid, iova >> 12) -> translations
    walks: int = 0
    doorbells: int = 0
    interrupts: int = 0
    mmio: Counter = field(default_factory=Counter)  # virtio region name -> accesses


def stretches(lines, gap=GAP_S):
    """Split trace lines into stretches of device activity (see the module
    doc): an event belongs to the stretch of the pop it follows within `gap`;
    the rest (boot, the pause between tools) is dropped."""
    found, cur, last_pop = [], None, None
    for line in lines:
        m = _EVENT.match(line)
        if not m:
            continue
        t, ev, rest = float(m.group(1)), m.group(2), m.group(3)
        if ev == "virtqueue_pop":
            if last_pop is None or t - last_pop > gap:
                cur = Stretch()
                found.append(cur)
            cur.pops += 1
            last_pop = t
        elif cur is not None and t - last_pop <= gap:
            _count(cur, ev, rest)
    return found


def _count(s, ev, rest):
    if ev in ("vtd_iotlb_page_hit", "vtd_iotlb_page_update"):
        m = _HIT.search(rest)
        if m:
            s.pages[(m.group(1), int(m.group(2), 16) >> 12)] += 1
            s.walks += ev == "vtd_iotlb_page_update"
    elif ev == "virtio_queue_notify":
        s.doorbells += 1
    elif ev == "virtio_notify":
        s.interrupts += 1
    elif ev.startswith("memory_region_ops_"):
        m = _REGION.search(rest)
        if m and "virtio" in m.group(1) and "notify" not in m.group(1):
            s.mmio[m.group(1)] += 1


def bench_runs(console_lines):
    """The console's `BENCH net` lines, in order: dicts of their key=value pairs."""
    runs = []
    for line in console_lines:
        m = _BENCH.search(line)
        if m:
            runs.append(dict(re.findall(r"(\w+)=(\S+)", m.group(1))))
    return runs


def match(found, runs):
    """Pair each benchmark run with its stretch; TraceError when the counts differ."""
    busy = [s for s in found if s.pops >= POPS_PER_FRAME * POP_SLACK_FRAMES]
    if len(busy) != len(runs):
        raise TraceError(f"{len(busy)} stretches of device activity in the trace for {len(runs)} runs on the "
                         f"console; was the trace on for the whole boot (GUESTBED_QEMU_EXTRA) and the host quiet "
                         f"enough that no run paused for {GAP_S} s?")
    for s, r in zip(busy, runs):
        sent = int(r["sent"])
        if abs(s.pops - POPS_PER_FRAME * sent) > POPS_PER_FRAME * POP_SLACK_FRAMES:
            raise TraceError(f"run {r.get('who')} {r.get('run')}: {sent} frames sent but {s.pops} buffers popped "
                             f"(expected {POPS_PER_FRAME} per frame, ±{POP_SLACK_FRAMES} frames): the stretches "
                             "do not line up with the runs")
    return list(zip(busy, runs))


@dataclass
class PerFrame:
    mode: str
    who: str
    run: str
    frames: int
    translations: float
    ring: float
    buffers: float
    walks: float
    doorbells: float
    interrupts: float
    mmio: float
    ring_pages: list  # per-frame translations of each ring page, largest first


def per_frame(s, r):
    frames = s.pops / POPS_PER_FRAME
    ring = [v / frames for v in s.pages.values() if v / frames >= RING_PAGE_SHARE]
    total, on_rings = sum(s.pages.values()) / frames, sum(ring)
    return PerFrame(
        mode=r.get("mode", "?"), who=r.get("who", "?"), run=r.get("run", "?"), frames=int(frames), translations=total,
        ring=on_rings, buffers=total - on_rings, walks=s.walks / frames, doorbells=s.doorbells / frames,
        interrupts=s.interrupts / frames, mmio=sum(s.mmio.values()) / frames, ring_pages=sorted(ring, reverse=True))


def report(rows, out=sys.stdout):
    cols = ("translations", "ring", "buffers", "walks", "doorbells", "interrupts", "mmio")
    print(f"{'mode':5} {'who':6} {'run':>3} {'frames':>8} " + " ".join(f"{c:>12}" for c in cols) + "  ring pages",
          file=out)
    for p in rows:
        print(f"{p.mode:5} {p.who:6} {p.run:>3} {p.frames:8d} " + " ".join(f"{getattr(p, c):12.4f}" for c in cols)
              + "  " + " ".join(f"{v:.2f}" for v in p.ring_pages), file=out)
    med = {}
    for mode in sorted({p.mode for p in rows}):
        for who in sorted({p.who for p in rows if p.mode == mode}):
            mine = [p for p in rows if p.mode == mode and p.who == who]
            med[(mode, who)] = {c: statistics.median(getattr(p, c) for p in mine) for c in cols}
            print(f"{mode:5} {who:6} med {'':8} " + " ".join(f"{med[(mode, who)][c]:12.4f}" for c in cols), file=out)
        o, d = med.get((mode, "ours")), med.get((mode, "dpdk"))
        if o and d and o["translations"] > 0:
            print(f"{mode}: translations per frame, testpmd / ours: {d['translations'] / o['translations']:.3f}", file=out)
    return med


def main(argv):
    if len(argv) != 3:
        print("usage: python3 -m guestbed.devicework TRACE CONSOLE", file=sys.stderr)
        return 64
    try:
        with open(argv[1], errors="replace") as t, open(argv[2], errors="replace") as c:
            pairs = match(stretches(t), bench_runs(c))
    except OSError as e:
        print(f"devicework: {e}", file=sys.stderr)
        return 66
    except TraceError as e:
        print(f"devicework: {e}", file=sys.stderr)
        return 65
    report([per_frame(s, r) for s, r in pairs])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
