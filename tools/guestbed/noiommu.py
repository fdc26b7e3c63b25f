"""vfio.ko with VFIO's no-IOMMU mode for the guest kernel (issue 14).

Debian's guest kernel is built without CONFIG_VFIO_NOIOMMU. This rebuilds
vfio.ko alone with it, from Debian's own sources of the very same version:

    linux-source-6.1=<V>, linux-headers-<kver>=<V>, linux-headers-<common>=<V>,
    linux-kbuild-6.1=<V>                  (apt-get download; never installed)

where <V> is the guest kernel package's version. Only drivers/vfio's vfio.o
is built (`make M=`, about 15 s); the option touches no exported symbol, so
the stock vfio_iommu_type1 / vfio-pci-core / vfio-pci load on top of it — the
build checks that: vermagic equals the guest's release and every symbol
vfio.ko exports has the CRC Debian's Module.symvers gives it (modversions).
Module signatures are not enforced (no lockdown in the guest).

Cached next to the kernel, under .cache/guest-kernel/<package>/vfio-noiommu/
(vfio.ko, BUILD.log, .complete): one build per machine and kernel version.
Host needs: gcc-12 and make (tools/test installs them).
"""

import glob
import os
import re
import shutil
import subprocess
import tempfile

from . import log
from .deps import DepsError, apt_update_once
from .initramfs import modinfo
from .kernel import publish_cache_entry

MODULE = "vfio.ko"


class NoIOMMUBuildError(RuntimeError):
    pass


def _version(kernel):
    """The Debian version of the guest kernel package (6.1.192-3)."""
    try:
        with open(os.path.join(kernel.root, "PACKAGE")) as f:
            name = f.read().strip()
    except OSError:
        raise NoIOMMUBuildError(f"{kernel.root}/PACKAGE missing: fetch the kernel again")
    m = re.match(r"linux-image-[^_]+_([^_]+)_amd64\.deb$", name)
    if not m:
        raise NoIOMMUBuildError(f"cannot read the kernel version from {name}")
    return m.group(1)


def _run(cmd, cwd, logf, what):
    logf.write(f"$ {' '.join(cmd)}\n")
    logf.flush()
    r = subprocess.run(cmd, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise NoIOMMUBuildError(f"{what} failed (exit {r.returncode}); see {logf.name}")


def _symvers(path, module):
    """symbol -> CRC for the symbols `module` exports in a Module.symvers."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[2].endswith(module):
                out[parts[1]] = parts[0]
    return out


def _build(kernel, dest):
    version = _version(kernel)
    kver = kernel.kver                      # 6.1.0-57-amd64
    common = kver.rsplit("-", 1)[0] + "-common"
    series = ".".join(kver.split(".")[:2])  # 6.1
    tmp = tempfile.mkdtemp(prefix=".noiommu-", dir=os.path.dirname(dest))
    try:
        try:
            shutil.chown(tmp, user="_apt")  # apt downloads as _apt
        except (LookupError, PermissionError, OSError):
            pass
        logpath = os.path.join(tmp, "BUILD.log")
        with open(logpath, "w") as logf:
            pkgs = [f"linux-source-{series}={version}", f"linux-headers-{kver}={version}",
                    f"linux-headers-{common}={version}", f"linux-kbuild-{series}={version}"]
            log(f"vfio no-IOMMU module: downloading {' '.join(pkgs)}")
            try:
                _run(["apt-get", "download", *pkgs], tmp, logf, "apt-get download")
            except NoIOMMUBuildError:
                # Stale package lists (the kernel came from the cache): refresh once.
                try:
                    apt_update_once()
                except DepsError as e:
                    raise NoIOMMUBuildError(str(e))
                _run(["apt-get", "download", *pkgs], tmp, logf, "apt-get download")
            root = os.path.join(tmp, "root")
            for deb in sorted(glob.glob(os.path.join(tmp, "*.deb"))):
                _run(["dpkg-deb", "-x", deb, root], tmp, logf, f"dpkg-deb -x {os.path.basename(deb)}")
            headers = os.path.join(root, "usr", "src", f"linux-headers-{kver}")
            # The headers' Makefile includes the common tree by absolute path: point it here.
            mk = os.path.join(headers, "Makefile")
            with open(mk) as f:
                text = f.read()
            with open(mk, "w") as f:
                f.write(text.replace("/usr/src/", os.path.join(root, "usr", "src") + "/"))
            tarball = os.path.join(root, "usr", "src", f"linux-source-{series}.tar.xz")
            log(f"vfio no-IOMMU module: unpacking drivers/vfio from {os.path.basename(tarball)}")
            _run(["tar", "-xaf", tarball, "--wildcards", f"linux-source-{series}/drivers/vfio/*"],
                 tmp, logf, "tar (drivers/vfio)")
            src = os.path.join(tmp, f"linux-source-{series}", "drivers", "vfio")
            build = os.path.join(tmp, "build")
            os.makedirs(build)
            for f in glob.glob(os.path.join(src, "*.[ch]")) + [os.path.join(src, "Makefile")]:
                shutil.copy(f, build)
            # vfio.o only; CONFIG_VFIO_NOIOMMU for Kbuild and, as the
            # generated autoconf.h lacks it, for the C preprocessor.
            off = ["CONFIG_VFIO_VIRQFD=", "CONFIG_VFIO_IOMMU_TYPE1=", "CONFIG_VFIO_PCI=",
                   "CONFIG_VFIO_MDEV=", "CONFIG_VFIO_PLATFORM=", "CONFIG_VFIO_FSL_MC="]
            log("vfio no-IOMMU module: make M=drivers/vfio (vfio.ko, CONFIG_VFIO_NOIOMMU=y)")
            _run(["make", "-C", headers, f"M={build}", "CONFIG_VFIO=m", "CONFIG_VFIO_NOIOMMU=y", *off,
                  "KCFLAGS=-DCONFIG_VFIO_NOIOMMU=1", "modules"], tmp, logf, "make (vfio.ko)")
            ko = os.path.join(build, MODULE)
            with open(ko, "rb") as f:
                info = modinfo(f.read())
            vermagic = (info.get("vermagic") or ["?"])[0].split()[0]
            if vermagic != kver:
                raise NoIOMMUBuildError(f"vfio.ko vermagic {vermagic} is not {kver}")
            if not any(p.startswith("enable_unsafe_noiommu_mode:") for p in info.get("parm", [])):
                raise NoIOMMUBuildError("vfio.ko was built without the no-IOMMU mode (no enable_unsafe_noiommu_mode)")
            ours = _symvers(os.path.join(build, "Module.symvers"), "/vfio")
            theirs = _symvers(os.path.join(headers, "Module.symvers"), "drivers/vfio/vfio")
            if not ours or ours != theirs:
                diff = sorted(set(ours.items()) ^ set(theirs.items()))[:4]
                raise NoIOMMUBuildError(f"vfio.ko's exported symbols differ from {kver}'s Module.symvers: {diff}")
            logf.write(f"vermagic {kver}, {len(ours)} exported symbols with Debian's CRCs\n")
        stage = os.path.join(tmp, "entry")
        os.makedirs(stage)
        shutil.copy(ko, os.path.join(stage, MODULE))
        shutil.copy(logpath, os.path.join(stage, "BUILD.log"))
        publish_cache_entry(stage, dest, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def vfio_noiommu_module(kernel):
    """Path of the cached vfio.ko with no-IOMMU mode for `kernel`, built on
    first use. Raises NoIOMMUBuildError with the reason when it cannot be built."""
    dest = os.path.join(kernel.root, "vfio-noiommu")
    if not os.path.exists(os.path.join(dest, ".complete")):
        _build(kernel, dest)
    else:
        log(f"vfio no-IOMMU module: cached ({dest})")
    return os.path.join(dest, MODULE)
