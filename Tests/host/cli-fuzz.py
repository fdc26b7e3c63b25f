#!/usr/bin/env python3
"""Command-line fuzz test of vio-fio, vio-fwd and vio-bind (issue 13).

Runs the built binaries a few hundred times with random and extreme option
values — huge, negative, 0, nan, inf, -inf, 1e400, 2^64, unit suffixes, empty
strings — alone and in combinations (offset x jobs, offset + size, runtime in
every unit), and checks:

  * no run traps or dies of a signal (no exit 132/133/134/139, no signal);
  * every run whose command line is bad exits 64 with a message on stderr;
  * every other run exits 0, 1 or 64 (the documented statuses), and never
    without a message when it fails.

Nothing here touches a device: every vio-fio target is a path that does not
exist, a regular file given as a vhost-user socket, or a 1 MiB temporary file
(the kernel path, so ranges meet a real geometry); every vio-fwd port is an
interface name that does not exist, a PCI address that does not exist
(0000:ff:1f.7) or a regular file as a vhost-user socket; vio-bind only runs
`status`/`check` (read-only) or `bind`/`restore` with malformed addresses,
which are refused before anything is looked at.

Seeded: `cli-fuzz.py [--seed N] [--runs N] [BIN_DIR]`; the seed is printed so
a failure can be replayed. BIN_DIR defaults to `swift build --show-bin-path`.
Prints CHECK lines and `cli-fuzz: N passed, M failed`; exit 1 on failure.
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

TRAPS = {132, 133, 134, 139}
# Anything shaped like a PCI address that could exist (function 0-7) is never
# passed to bind/restore; function 8-f cannot exist, and must be refused (64).
BDF = re.compile(r"^([0-9a-fA-F]{1,4}:)?[0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}\.[0-7]$")
MISSING_BDF = "0000:ff:1f.7"  # bus 0xff, device 0x1f, function 7: not on any test machine

EXTREMES = [
    "0", "-0", "1", "-1", "2", "nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "1e400", "-1e400", "1e308",
    "1e19", "1e3", "0x10", "1.5", "0.0000001", "18446744073709551616", "18446744073709551615", "9223372036854775807",
    "9223372036854775808", "-9223372036854775808", "-9223372036854775809", "4294967296", "4294967295", "2147483648",
    "65536", "65535", "32768", "32769", "", " ", "k", "1kk", "4k", "4K", "4KiB", "4kb", "1m", "64m", "65m", "1g", "1t",
    "16p", "16383p", "16384p", "17179869184g", "1k5", "500ms", "250us", "7ns", "2m", "1h", "1d", "365d", "366d",
    "99999d", "213504d", "0.5", "0.5s", "1.25h", "s", "ms", ".5", "5.", "1..2", "١", "٣k", "1_000", "+1", "--", "-",
]
SUFFIXES = ["", "", "k", "K", "m", "M", "g", "G", "t", "p", "kib", "KiB", "b", "s", "ms", "us", "ns", "m", "h", "d",
            "x", "e5", ".5"]


def random_number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(EXTREMES)
    if kind == 1:
        return str(rng.randrange(-10, 10))
    if kind == 2:
        return str(rng.getrandbits(rng.choice([8, 16, 31, 32, 33, 63, 64, 65, 80])) * rng.choice([1, 1, -1]))
    if kind == 3:
        return str(rng.getrandbits(rng.choice([4, 10, 20, 40, 60]))) + rng.choice(SUFFIXES)
    if kind == 4:
        # Decimal and exponent forms, up to 1e400 (past a Double: inf).
        return repr(rng.uniform(-1e3, 1e3)) if rng.random() < 0.5 else "%.3fe%d" % (rng.uniform(1, 10), rng.randrange(-20, 400))
    return rng.choice(EXTREMES) + rng.choice(SUFFIXES)


class Case:
    def __init__(self, tool, args, bad):
        self.tool, self.args, self.bad = tool, args, bad
        self.netns = False

    def line(self):
        return " ".join([self.tool] + [repr(a) if (a == "" or " " in a) else a for a in self.args])


FIO_NUMERIC = ["--bs", "--iodepth", "--numjobs", "--size", "--offset", "--offset_increment", "--runtime", "--rwmixread",
               "--randseed", "--hybrid", "--queue_size", "--stall_timeout", "--do_verify", "--direct", "--end_fsync",
               "--fsync", "--reconnect_timeout", "--test-only-needs-reset-after",
               "--verify_pattern", "--metrics-port", "--metrics-linger", "--iodepth_batch_complete_min"]
FWD_NUMERIC = ["--queues", "--burst", "--rxd", "--txd", "--pkt-size", "--duration", "--stats-period", "--idle-polls",
               "--tx-retries", "--metrics-port", "--metrics-linger", "--test-only-needs-reset-after",
               "--test-only-clear-filters-after", "--rx-refill", "--tx-reclaim-below", "--tx-kick-batch", "--idle-pause"]
# List and text options (issue 15): cpulists, RSS tables and keys, MACs, VLANs.
FWD_LISTS = ["--cpus", "--rss-table", "--vlan-filter", "--rss-key", "--rss-hash", "--mac", "--mac-filter"]
LIST_VALUES = ["0", "0-1", "1,0", "0,0", "3-1", "1,", ",", "-", "0-99999999999999999999", "4095", "4096", "0-4095",
               "18446744073709551616", "6d5a", "6d5", "zz", "02:00:00:00:00:01", "01:00:5e:00:00:01", "none",
               "ipv4,udp4", "ipv5", "\u0663", ""]

def numeric_options(rng, options):
    """One to three of the numeric options, each with a random number, as --opt=N or --opt N."""
    args = []
    for opt in rng.sample(options, rng.randrange(1, 4)):
        if rng.random() < 0.5:
            args.append(opt + "=" + random_number(rng))
        else:
            args += [opt, random_number(rng)]
    return args


def fio_cases(rng, n, tmp, notsock):
    # A missing file (kernel path), a regular file as a socket, a path through a regular file (ENOTDIR).
    targets = [os.path.join(tmp, "no-such-disk.img"), "vhost-user:" + notsock, "vhost-user:" + notsock + "/x.sock"]
    cases = []
    for i in range(n):
        args = ["--filename=" + rng.choice(targets)]
        if i % 5 == 0:
            # Combinations: offsets x jobs, offset + size, runtime in every unit.
            big = rng.choice(["16383p", "18446744073709551615", "8191p", "1t", str(2 ** 63), "9223372036854775807"])
            args += ["--offset=" + rng.choice([big, "0", "4k"]), "--offset_increment=" + rng.choice([big, "1m", "0"]),
                     "--numjobs=" + str(rng.choice([1, 2, 64, 65])), "--size=" + rng.choice([big, "1m", "4k"]),
                     "--runtime=" + rng.choice(["1", "1ns", "1us", "1ms", "1s", "1m", "1h", "1d", "365d", "366d",
                                                "213504d", "99999999999999h", "0.5", "inf"])]
        else:
            args += numeric_options(rng, FIO_NUMERIC)
        if rng.random() < 0.2:
            args.append(rng.choice(["--time_based", "--verify=crc32c", "--rw=randrw", "--rw=write", "--interrupts",
                                    "--verify=pattern", "--output-format=json", "--rw=sideways", "--bogus=1"]))
        # Every target is missing or not a socket: every run is refused, with 64.
        cases.append(Case("vio-fio", args, True))
    return cases


def fwd_cases(rng, n, notsock):
    ports = ["viofz0", "pci:" + MISSING_BDF, "vhost-user:" + notsock]
    cases = []
    for i in range(n):
        args = ["--port", rng.choice(ports)]
        if rng.random() < 0.3:
            args += ["--port", rng.choice(ports)]
        if i % 6 == 0:
            unit = rng.choice(["", "ns", "us", "ms", "s", "m", "h", "d"])
            args += ["--duration", rng.choice(["0", "1", "0.5", "365", "99999999", "1e400", "inf", "nan"]) + unit,
                     "--stats-period", rng.choice(["0", "1", "0.001", "366", "-1", "inf"]) + unit]
        else:
            args += numeric_options(rng, FWD_NUMERIC)
        if rng.random() < 0.3:
            args += [rng.choice(FWD_LISTS), rng.choice(LIST_VALUES + [random_number(rng)])]
        if rng.random() < 0.2:
            args.append(rng.choice(["--json", "--mode=txonly", "--mode=sideways", "--wait=hybrid", "--ring=packed", "--no-fallback",
                                    "--log-level=loud", "--no-event-idx"]))
        cases.append(Case("vio-fwd", args, True))
    return cases


# Durations for runs whose port opens (a veth in a private network
# namespace): the good ones are short; everything else must be refused.
GOOD_DURATIONS = ["0.2", "200ms", "200000us", "0.0001h"]
BAD_DURATIONS = ["inf", "-inf", "nan", "1e400", "-1", "1e19", "18446744073709551616", "99999999999999h", "213504d",
                 "366d", "", "0x1", "1e3", ".5", "5.", "1ss"]
GOOD_PERIODS = ["0", "0.05", "50ms"]
BAD_PERIODS = ["inf", "-1", "nan", "1e400", "366d", "9223372036854775808", "", "-0.5"]
LIVE_LINE = re.compile(r"^vio-fwd: [0-9.]+s port0 rx ", re.M)


def fwd_open_cases(rng, n):
    """vio-fwd with a port that opens: the numbers are the only thing that can be wrong."""
    cases = []
    for i in range(n):
        d = rng.choice(GOOD_DURATIONS) if i % 3 == 0 else rng.choice(GOOD_DURATIONS + BAD_DURATIONS)
        p = rng.choice(GOOD_PERIODS) if i % 3 == 0 else rng.choice(GOOD_PERIODS + BAD_PERIODS)
        args = ["--port", "d0", "--mode", "rxonly", "--duration", d, "--stats-period", p]
        if rng.random() < 0.3:
            args += [rng.choice(["--burst", "--rxd", "--txd", "--idle-polls", "--tx-retries"]), rng.choice(["32", "64"])]
        # NetQueuePolicy's knobs (issue 17): 1 ... the ring they pace, anything else refused.
        policy_ok = True
        if rng.random() < 0.4:
            opt = rng.choice(["--rx-refill", "--tx-reclaim-below", "--tx-kick-batch"])
            ring = int(args[args.index("--rxd" if opt == "--rx-refill" else "--txd") + 1]) \
                if ("--rxd" if opt == "--rx-refill" else "--txd") in args else 256
            v = rng.choice(["1", "8", "32", "256", "0", "-1", "257", "65536", "x", "1e400", ""])
            args += [opt, v]
            policy_ok = v.isdigit() and 1 <= int(v) <= ring
        if rng.random() < 0.2:
            args.append("--no-event-idx")
        if rng.random() < 0.2:
            v = rng.choice(["0", "1", "1000", "1001", "-1", "x", ""])
            args += ["--idle-pause", v]
            policy_ok = policy_ok and v.isdigit() and int(v) <= 1000
        c = Case("vio-fwd", args, not (d in GOOD_DURATIONS and p in GOOD_PERIODS and policy_ok))
        c.netns = True
        cases.append(c)
    return cases


def fio_file_cases(rng, n, image):
    """vio-fio on a 1 MiB file (the kernel path, page cache): the ranges are
    checked against a real geometry — offsets x jobs + size past the end or
    past 2^64 must be refused (64), small valid ones run (0)."""
    offsets = ["0", "4k", "512k", "1m", "1020k", "16383p", "8191p", "18446744073709551615", str(2 ** 63), "9223372036854775807"]
    cases = []
    for _ in range(n):
        args = ["--filename=" + image, "--rw=" + rng.choice(["read", "randread", "write"]), "--bs=4k", "--direct=0",
                "--offset=" + rng.choice(offsets), "--offset_increment=" + rng.choice(offsets + ["0"] * 3),
                "--numjobs=" + str(rng.choice([1, 2, 3])), "--eta=never"]
        if rng.random() < 0.7:
            args.append("--size=" + rng.choice(["4k", "8k", "64k", "1m", "16383p", "18446744073709551615", "0"]))
        if rng.random() < 0.3:
            args.append("--runtime=" + rng.choice(["1ns", "1ms", "0.1", "2s", "1e400", "inf", "366d"]))
        cases.append(Case("vio-fio", args, False))
    return cases


def not_an_address(rng):
    while True:
        s = rng.choice([random_number(rng), "0000:00:03", "00:03.0.1", "0000:zz:03.0", "0000:00:03.8", "1:2:3.4",
                        "0000:00:003.0", "pci:0000:00:03.0", "", " ", "0000:00:03.0 ", "../0000:00:03.0",
                        "0000/00/03.0", "0000:00:03:0"])
        if not BDF.match(s.strip()) and not BDF.match(s):
            return s


def bind_cases(rng, n):
    cases = []
    for i in range(n):
        k = i % 6
        if k == 0:
            word = rng.choice(["frobnicate", "stat", "binds", "unbind", "reset", "checks", "Status", "x", "0", "1e400", "nan"])
            cases.append(Case("vio-bind", [word] + ([random_number(rng)] if rng.random() < 0.5 else []), True))
        elif k == 2 and rng.random() < 0.5:
            # bind/restore of a function that is not there: refused before anything is done (64).
            cases.append(Case("vio-bind", [rng.choice(["bind", "restore"]), MISSING_BDF], True))
        elif k in (1, 2):
            sub = rng.choice(["bind", "restore"])
            args = [sub] + ([rng.choice(["--force", "--verbose"])] if rng.random() < 0.3 else [])
            args += [not_an_address(rng) for _ in range(rng.randrange(1, 3))]
            cases.append(Case("vio-bind", args, True))
        elif k == 3:
            # check: a malformed address or a function that is not there is refused (64).
            if rng.random() < 0.5:
                cases.append(Case("vio-bind", ["check", not_an_address(rng)], True))
            else:
                cases.append(Case("vio-bind", ["check", MISSING_BDF] + (["--json"] if rng.random() < 0.5 else []), True))

        elif k == 4:
            cases.append(Case("vio-bind", [rng.choice(["status", "check", "bind", "restore"]),
                                           rng.choice(["--bogus", "--all=" + random_number(rng), "--json=1", "-x"])], True))
        else:
            cases.append(Case("vio-bind", rng.choice([["status"], ["status", "--json"], ["check"], ["status", "--all"]]), False))
    return cases


def run(binary, case, timeout):
    argv = [binary] + case.args
    if case.netns:
        # A private network namespace with one veth pair (d0, d1): nothing outside it is touched.
        argv = ["unshare", "-n", "sh", "-c", 'ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up && exec "$0" "$@"'] + argv
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return case, None, "timed out after %d s" % timeout, ""
    return case, p.returncode, p.stderr.decode(errors="replace"), p.stdout.decode(errors="replace")


def judge(case, rc, err, out):
    """None when fine, else why not."""
    if rc is None:
        return err
    if rc < 0:
        return "killed by signal %s" % signal.Signals(-rc).name
    if rc in TRAPS:
        return "trapped (exit %d): %s" % (rc, err.strip().splitlines()[-1:] if err.strip() else "")
    if case.bad and rc != 64:
        return "exit %d, want 64 (a bad command line or a target that is not there)" % rc
    if rc not in (0, 1, 64):
        return "exit %d is not a documented status (0, 1, 64)" % rc
    if rc == 64 and not err.strip():
        return "exit 64 with nothing on stderr"
    # vio-bind check reports its FAILURE lines on stdout (its report), exit 1.
    if rc == 1 and not err.strip() and not (case.args[:1] == ["check"] and ("FAILURE" in out or '"failure"' in out)):
        return "exit 1 with no message"
    if case.netns and rc == 0 and "--stats-period" in case.args and case.args[case.args.index("--stats-period") + 1] == "0":
        lines = LIVE_LINE.findall(err)
        if lines:
            return "--stats-period 0 (no live lines) printed %d live line(s)" % len(lines)
    if rc == 64 and "vio-" not in err and "Error" not in err and "error" not in err:
        return "exit 64 without a message naming the problem: %r" % err[:200]
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin", nargs="?")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CLI_FUZZ_SEED", "0")) or random.randrange(1, 2 ** 32))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("CLI_FUZZ_RUNS", "120")), help="runs per tool")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    bindir = a.bin or subprocess.run(["swift", "build", "--show-bin-path"], capture_output=True, text=True,
                                     check=True).stdout.strip()
    print("cli-fuzz: seed %d (replay: Tests/host/cli-fuzz.py --seed %d --runs %d)" % (a.seed, a.seed, a.runs), flush=True)
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="cli-fuzz-") as tmp:
        notsock = os.path.join(tmp, "regular-file.sock")
        open(notsock, "w").close()
        image = os.path.join(tmp, "disk-1m.img")
        with open(image, "wb") as f:
            f.truncate(1 << 20)
        cases = (fio_cases(rng, a.runs, tmp, notsock) + fio_file_cases(rng, max(a.runs // 4, 6), image)
                 + fwd_cases(rng, a.runs, notsock) + bind_cases(rng, a.runs))
        if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
            cases += fwd_open_cases(rng, max(a.runs // 4, 6))
        else:
            print("cli-fuzz: not root (or no unshare/ip): vio-fwd runs with a port that opens are skipped")
        with ThreadPoolExecutor(max_workers=a.jobs) as pool:
            results = list(pool.map(lambda c: run(os.path.join(bindir, c.tool), c, 60), cases))
    passed = failed = 0
    per_tool = {}
    for case, rc, err, out in results:
        why = judge(case, rc, err, out)
        t = per_tool.setdefault(case.tool, {"runs": 0, "exits": {}})
        t["runs"] += 1
        t["exits"][rc] = t["exits"].get(rc, 0) + 1
        if why:
            failed += 1
            tail = " / ".join(err.strip().splitlines()[-2:])[-300:] if err else ""
            print("CHECK FAIL cli-fuzz: %s: %s%s" % (case.line(), why, " (stderr: %s)" % tail if tail else ""))
    for tool, t in sorted(per_tool.items()):
        exits = ", ".join("exit %s x%d" % (k, v) for k, v in sorted(t["exits"].items(), key=lambda kv: str(kv[0])))
        bad = sum(1 for c, rc, e, o in results if c.tool == tool and judge(c, rc, e, o))
        if bad == 0:
            passed += 1
            print("CHECK PASS cli-fuzz-%s: %d runs, no trap, every refusal 64 with a message (%s)" % (tool, t["runs"], exits))
    print("cli-fuzz: %d passed, %d failed (seed %d)" % (passed, failed, a.seed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
