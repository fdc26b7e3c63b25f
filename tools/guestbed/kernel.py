"""Fetch and cache the Debian guest kernel (never installed on the host).

    python3 -m guestbed.kernel [--print]      (from tools/), or
    tools/guestbed/fetch-kernel

Resolves linux-image-6.1.0-NN-amd64 from `apt-cache depends
linux-image-amd64`, downloads it with `apt-get download`, unpacks it with
`dpkg-deb -x` and keeps, under .cache/guest-kernel/<package>/:

    vmlinuz                      the kernel image
    config                       its build config
    modules/<kver>/...           the modules tree (lib/modules/<kver>)
    KVER                         the kernel release string
    .complete                    written last: the cache entry is whole

Idempotent: a complete entry is reused without touching the network. When
the package lists cannot resolve the name (fresh machine), `apt-get update`
runs once and the lookup is retried; when the archive is unreachable but a
complete entry exists, that entry is used.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from . import CACHE_DIR, log
from .deps import DepsError, apt_update_once

KERNEL_CACHE = os.path.join(CACHE_DIR, "guest-kernel")
META_PACKAGE = "linux-image-amd64"


class GuestKernel:
    def __init__(self, root):
        self.root = root
        with open(os.path.join(root, "KVER")) as f:
            self.kver = f.read().strip()
        self.vmlinuz = os.path.join(root, "vmlinuz")
        self.config = os.path.join(root, "config")
        self.modules_dir = os.path.join(root, "modules", self.kver)

    def __repr__(self):
        return f"GuestKernel({self.kver} at {self.root})"


def _resolve_package():
    """linux-image-6.1.0-NN-amd64 from the meta package's dependency."""
    r = subprocess.run(["apt-cache", "depends", META_PACKAGE],
                       capture_output=True, text=True)
    m = re.search(r"Depends:\s*(linux-image-\S+-amd64)\b", r.stdout)
    return m.group(1) if m else None


def _complete_entries():
    return sorted(p for p in glob.glob(os.path.join(KERNEL_CACHE, "*"))
                  if os.path.exists(os.path.join(p, ".complete")))


def _download_and_unpack(pkg, dest):
    tmp = tempfile.mkdtemp(prefix=".fetch-", dir=KERNEL_CACHE)
    try:
        # apt drops privileges to _apt for downloads; let it write here.
        try:
            shutil.chown(tmp, user="_apt")
        except (LookupError, PermissionError, OSError):
            pass
        log(f"downloading {pkg} (apt-get download)")
        if subprocess.run(["apt-get", "download", pkg], cwd=tmp).returncode != 0:
            raise DepsError(f"apt-get download {pkg} failed")
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if len(debs) != 1:
            raise DepsError(f"expected one .deb for {pkg}, found {debs}")
        unpack = os.path.join(tmp, "root")
        log(f"unpacking {os.path.basename(debs[0])} (dpkg-deb -x)")
        subprocess.run(["dpkg-deb", "-x", debs[0], unpack], check=True)
        kimgs = glob.glob(os.path.join(unpack, "boot", "vmlinuz-*"))
        if len(kimgs) != 1:
            raise DepsError(f"no single vmlinuz in {pkg}: {kimgs}")
        kver = os.path.basename(kimgs[0])[len("vmlinuz-"):]
        stage = os.path.join(tmp, "entry")
        os.makedirs(os.path.join(stage, "modules"))
        shutil.move(kimgs[0], os.path.join(stage, "vmlinuz"))
        cfg = os.path.join(unpack, "boot", f"config-{kver}")
        if os.path.exists(cfg):
            shutil.move(cfg, os.path.join(stage, "config"))
        moddir = None
        for base in ("lib/modules", "usr/lib/modules"):
            cand = os.path.join(unpack, base, kver)
            if os.path.isdir(cand):
                moddir = cand
        if moddir is None:
            raise DepsError(f"no modules tree for {kver} in {pkg}")
        shutil.move(moddir, os.path.join(stage, "modules", kver))
        with open(os.path.join(stage, "KVER"), "w") as f:
            f.write(kver + "\n")
        with open(os.path.join(stage, "PACKAGE"), "w") as f:
            f.write(os.path.basename(debs[0]) + "\n")
        publish_cache_entry(stage, dest, "ok")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_cache_entry(stage, dest, stamp):
    """Marks the staged cache entry complete (`stamp` in .complete) and moves it
    to `dest`, replacing what was there: a cache entry is whole or absent."""
    with open(os.path.join(stage, ".complete"), "w") as f:
        f.write(f"{stamp}\n")
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.rename(stage, dest)


def _cached(pkg):
    dest = os.path.join(KERNEL_CACHE, pkg)
    return dest if os.path.exists(os.path.join(dest, ".complete")) else None


def fetch_kernel(offline_ok=True):
    """Return a GuestKernel, downloading it on first use. Empty or stale
    package lists (nothing resolves, or the .deb is gone from the archive)
    get one `apt-get update` and a second try."""
    os.makedirs(KERNEL_CACHE, exist_ok=True)
    error = None
    for attempt in range(2):
        if attempt:
            try:
                apt_update_once()
            except DepsError as e:
                error = e
                break
        pkg = _resolve_package()
        if pkg is None:
            error = DepsError(f"cannot resolve the kernel package behind {META_PACKAGE} "
                              "(apt-cache depends); is this a Debian 12 host?")
            continue
        if _cached(pkg):
            return GuestKernel(_cached(pkg))
        try:
            _download_and_unpack(pkg, os.path.join(KERNEL_CACHE, pkg))
            return GuestKernel(_cached(pkg))
        except DepsError as e:
            error = e
    entries = _complete_entries()
    if offline_ok and entries:
        log(f"{error}; using the cached {entries[-1]}")
        return GuestKernel(entries[-1])
    raise error


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--print", action="store_true",
                    help="print the cache entry's path only")
    args = ap.parse_args(argv)
    try:
        k = fetch_kernel()
    except DepsError as e:
        print(f"fetch-kernel: {e}", file=sys.stderr)
        return 1
    if args.print:
        print(k.root)
    else:
        print(f"kernel {k.kver}\n  vmlinuz {k.vmlinuz}\n  modules {k.modules_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
