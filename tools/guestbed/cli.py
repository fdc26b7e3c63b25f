"""tools/guest-test: run the project's binaries in QEMU guests with real
virtio-pci devices behind a vIOMMU, one boot per variant.

Results: every CHECK line of every variant, prefixed with the variant's
name, then exactly one closing line `guest: N passed, M failed`. The exit
status is 0 only when M is 0 (a boot that times out, panics or ends
without PLAN DONE is a failed check `<variant>/boot`).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from . import REPO_ROOT, blktest, log
from . import boot as bootmod
from . import deps, initramfs, noiommu, plan, variants
from .kernel import fetch_kernel

# Swift products built for the guest (each lands in the initramfs's /bin).
PRODUCTS = ["vio-guest-check", "vio-bind", "vio-fwd", "vio-fio", "block-log"]
# Programs the default plan runs with `--net <bdf> --blk <bdf>`.
RUN_PROGRAMS = ["vio-guest-check"]
# split:iommu=off: no vIOMMU, only the fallback checks (plans/fallback-noiommu.sh).
# packed:net-queues=2: the packed ring with two net queue pairs (vio-fwd's two
# workers; the net devices' host sides are multi-queue taps).
DEFAULT_VARIANTS = "split,packed:net-queues=2,split:iommu=off"
SWIFT_BUILD = ["swift", "build", "-c", "release", "--static-swift-stdlib"]


class SetupError(RuntimeError):
    pass


def _declared_products():
    """Product names from `swift package dump-package`, else from the text."""
    try:
        r = subprocess.run(["swift", "package", "dump-package"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            return {p["name"] for p in json.loads(r.stdout).get("products", [])}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    try:
        with open(os.path.join(REPO_ROOT, "Package.swift")) as f:
            text = f.read()
    except OSError:
        return set()
    return set(re.findall(r'\.executable\(\s*name:\s*"([^"]+)"', text))


def build_products(products):
    """swift build the release products; returns their binaries' paths."""
    if shutil.which("swift") is None:
        raise SetupError("swift is not on PATH (or pass --no-build --binary PATH)")
    declared = _declared_products()
    missing = [p for p in products if p not in declared]
    if missing:
        raise SetupError(f"product(s) {', '.join(missing)} not declared in Package.swift "
                         f"(declared: {', '.join(sorted(declared)) or 'none'})")
    for p in products:
        cmd = SWIFT_BUILD + ["--product", p]
        log("$ " + " ".join(cmd))
        if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
            raise SetupError(f"`{' '.join(cmd)}` failed")
    r = subprocess.run(SWIFT_BUILD + ["--show-bin-path"], cwd=REPO_ROOT,
                       capture_output=True, text=True)
    bindir = r.stdout.strip().splitlines()[-1] if r.returncode == 0 else ""
    paths = [os.path.join(bindir, p) for p in products]
    for p in paths:
        if not os.path.isfile(p):
            raise SetupError(f"built product not found at {p}")
    return paths


def _parser():
    ap = argparse.ArgumentParser(
        prog="tools/guest-test", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=variants.__doc__)
    g = ap.add_argument_group("variants")
    g.add_argument("--variants", "--variant", dest="variants", action="append",
                   metavar="SPEC[,SPEC]",
                   help=f"variants to boot, one boot each (default {DEFAULT_VARIANTS})")
    g.add_argument("--queue-size", metavar="N",
                   help="all variants: blk queue-size and net rx/tx_queue_size")
    g.add_argument("--blk-queue-size", metavar="N")
    g.add_argument("--net-queue-size", metavar="N")
    g.add_argument("--mq", metavar="N", help="all variants: blk num-queues and net queue pairs")
    g.add_argument("--blk-queues", metavar="N")
    g.add_argument("--net-queues", metavar="N")
    g.add_argument("--no-event-idx", action="store_true", help="event_idx=off on both devices")
    g.add_argument("--no-indirect", action="store_true", help="indirect_desc=off on both devices")
    g = ap.add_argument_group("what runs in the guest")
    g.add_argument("--binary", action="append", default=[], metavar="PATH",
                   help="add a binary to the guest's /bin (repeatable; wins over a "
                   "built product of the same name)")
    g.add_argument("--host-file", action="append", default=[], metavar="PATH",
                   help="copy this host file to the same path in the guest, with the shared "
                   "libraries it needs (repeatable; e.g. a plugin a --binary loads at run time)")
    g.add_argument("--deb", action="append", default=[], metavar="FILE",
                   help="unpack this Debian package into the guest's root (its files, "
                   "not its maintainer scripts), with the host's systemd-udevd to run "
                   "its udev rules (repeatable; tools/package makes one)")
    g.add_argument("--no-build", action="store_true",
                   help="do not build the Swift products; use --binary paths only")
    g.add_argument("--products", default=",".join(PRODUCTS),
                   help="Swift products to build (default %(default)s)")
    g.add_argument("--run", default=",".join(RUN_PROGRAMS),
                   help="programs the default plan runs (default %(default)s)")
    g.add_argument("--plan", metavar="FILE",
                   help="a plan body (busybox sh) instead of the default plan")
    g.add_argument("--prebind", action="store_true",
                   help="default plan: bind the devices to vfio-pci before running the "
                   "programs (default: they start on the kernel's virtio drivers)")
    g = ap.add_argument_group("machine")
    g.add_argument("--timeout", type=int,
                   default=int(os.environ.get("GUEST_TEST_TIMEOUT", "600")),
                   help="seconds per boot (default %(default)s, env GUEST_TEST_TIMEOUT)")
    g.add_argument("--mem", type=int, default=1024, help="guest MiB (default %(default)s)")
    g.add_argument("--smp", type=int, default=2)
    g.add_argument("--hugepages", type=int, default=64, help="2 MiB pages to reserve")
    g.add_argument("--disk-mib", type=int, default=64)
    g.add_argument("--net-backend", choices=("stream", "tap"),
                   help="host side of virtio-net: stream = TCP frame server (default), "
                   "tap = multi-queue tap + AF_PACKET (default when net-queues > 1)")
    g = ap.add_argument_group("harness")
    g.add_argument("--workdir", help="keep everything here (default: a temp dir, "
                   "removed when all checks pass)")
    g.add_argument("--keep", action="store_true", help="keep the temp dir")
    g.add_argument("--console", action="store_true", help="echo the guest console live")
    g.add_argument("--no-install", action="store_true", help="do not run apt-get")
    return ap


def _variant_defaults(a):
    d = []
    for key, val in (("qsize", a.queue_size), ("blk-qsize", a.blk_queue_size),
                     ("net-qsize", a.net_queue_size), ("mq", a.mq),
                     ("blk-queues", a.blk_queues), ("net-queues", a.net_queues)):
        if val is not None:
            d.append((key, val))
    if a.no_event_idx:
        d.append(("event_idx", "off"))
    if a.no_indirect:
        d.append(("indirect", "off"))
    return d


def _safe(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def main(argv=None):
    a = _parser().parse_args(argv)
    passed = failed = 0
    keep = a.keep or a.workdir is not None
    workdir = a.workdir or tempfile.mkdtemp(prefix="guest-test-")
    os.makedirs(workdir, exist_ok=True)
    try:
        try:
            bootmod.extra_qemu_args()  # a malformed diagnostic knob stops here, not at the first boot
        except ValueError as e:
            raise SetupError(str(e)) from None
        vlist = variants.parse_list(a.variants or [DEFAULT_VARIANTS], _variant_defaults(a))
        if a.net_backend == "stream":
            for v in vlist:
                if (v.net_queues or 1) > 1:
                    raise SetupError(f"{v.name}: net-queues > 1 needs a multi-queue "
                                     "netdev: the tap backend")
        if not a.no_install:
            deps.ensure_packages()
            if a.deb:
                deps.ensure_packages(deps.UDEV_PACKAGES)
        kernel = fetch_kernel()
        binaries = []
        if not a.no_build:
            binaries += build_products([p for p in a.products.split(",") if p])
        binaries += [os.path.abspath(b) for b in a.binary]
        binaries += blktest.host_binaries()      # fio, for the block checks' cross-check
        # setpriv (util-linux): a refusal check runs vio-fio without CAP_SYS_ADMIN
        binaries += [p for p in ("/usr/bin/setpriv",) if os.path.exists(p)]
        if a.plan:
            with open(a.plan) as f:
                body = f.read()
        else:
            body = plan.default_plan_body([p for p in a.run.split(",") if p])
        # A boot without a vIOMMU also proves VFIO's no-IOMMU mode: its vfio.ko
        # is rebuilt (cached) with CONFIG_VFIO_NOIOMMU; the plan fails with the
        # reason when that was impossible.
        noiommu_vfio = noiommu_error = None
        if any(not v.iommu for v in vlist):
            try:
                noiommu_vfio = noiommu.vfio_noiommu_module(kernel)
            except (noiommu.NoIOMMUBuildError, OSError) as e:
                noiommu_error = str(e)
                log(f"vfio no-IOMMU module unavailable: {e}")
        base, _ = initramfs.build_base(kernel, binaries, workdir,
                                       debs=[os.path.abspath(d) for d in a.deb],
                                       noiommu_vfio=noiommu_vfio,
                                       host_files=[os.path.abspath(h) for h in a.host_file])
    except (SetupError, deps.DepsError, initramfs.InitramfsError,
            variants.VariantError, OSError) as e:
        print(f"guest-test: setup failed: {e}", flush=True)
        print("guest: 0 passed, 1 failed", flush=True)
        return 2

    t_all = time.monotonic()
    for v in vlist:
        vdir = os.path.join(workdir, _safe(v.name))
        os.makedirs(vdir, exist_ok=True)
        env = v.env(a.smp)
        env["GUESTBED_HUGEPAGES"] = str(a.hugepages)
        env["GUESTBED_BIND"] = "vfio" if a.prebind else "kernel"
        if not v.iommu:
            env["GUESTBED_NOIOMMU_VFIO"] = ("/" + initramfs.NOIOMMU_VFIO) if noiommu_vfio else ""
            env["GUESTBED_NOIOMMU_VFIO_ERROR"] = noiommu_error or ""
        initrd = initramfs.build_variant(base, plan.compose(body), plan.env_file(env), vdir)
        log(f"booting variant {v.name} (timeout {a.timeout} s)")
        r = bootmod.boot(v, kernel, initrd, vdir, timeout_s=a.timeout, mem_mib=a.mem,
                         smp=a.smp, echo_console=a.console, disk_mib=a.disk_mib,
                         net_backend=a.net_backend)
        for name, ok, reason in r.checks:
            full = f"{v.name}/{name}"
            if ok:
                passed += 1
                print(f"PASS {full}" + (f" ({reason})" if reason else ""), flush=True)
            else:
                failed += 1
                print(f"FAIL {full}: {reason}", flush=True)
        if r.failed:
            print(f"--- last 60 console lines of {v.name} ({vdir}/console.log) ---")
            for line in r.console[-60:]:
                print(f"  | {line}")
            print("---", flush=True)
            keep = True
        log(f"variant {v.name}: {r.wall_s:.1f} s wall")
    log(f"{len(vlist)} boot(s) in {time.monotonic() - t_all:.1f} s")
    if keep:
        log(f"artifacts kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"guest: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
