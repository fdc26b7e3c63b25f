"""Host packages the test bed needs, installed with apt when missing.

`apt-get update` runs at most once per process, and only when something has
to come from the archive (a missing package, or the guest kernel when the
package lists are empty or stale).
"""

import os
import shutil
import subprocess

from . import log

# Debian package -> a file that proves it is installed.
HOST_PACKAGES = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "busybox-static": "/bin/busybox",
    "cpio": "/usr/bin/cpio",
    # the block checks run the real fio (io_uring) in the guest as a cross-check
    "fio": "/usr/bin/fio",
    # building the tools: BlockIO's kernel path links liburing
    "liburing-dev": "/usr/include/liburing.h",
}
# With --deb: the package runs under the host's systemd-udevd (copied into the
# guest with its libraries), and dpkg-deb unpacks the package.
UDEV_PACKAGES = {"udev": "/lib/systemd/systemd-udevd", "dpkg": "/usr/bin/dpkg-deb"}

_updated = False


class DepsError(RuntimeError):
    pass


def _apt_env():
    env = dict(os.environ)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return env


def _run(cmd, **kw):
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, env=_apt_env(), **kw)


def apt_update_once():
    global _updated
    if _updated:
        return
    if shutil.which("apt-get") is None:
        raise DepsError("apt-get not found: the test bed needs a Debian host")
    r = _run(["apt-get", "update"])
    if r.returncode != 0:
        raise DepsError("apt-get update failed")
    _updated = True


def _installed(pkg, marker):
    if marker and os.path.exists(marker):
        return True
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                       capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_packages(packages=None):
    """Install the packages that are missing (skip apt when all are there)."""
    packages = packages or HOST_PACKAGES
    missing = [p for p, m in packages.items() if not _installed(p, m)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise DepsError("missing packages %s and not root: install them first"
                        % " ".join(missing))
    apt_update_once()
    r = _run(["apt-get", "install", "-y", "--no-install-recommends"] + missing)
    if r.returncode != 0:
        raise DepsError("apt-get install %s failed" % " ".join(missing))
