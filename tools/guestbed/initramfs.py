"""Build the guest initramfs.

The initramfs is two cpio (newc) archives concatenated, which the kernel
unpacks one after the other:

  base     busybox-static + applet links, the kernel modules (dependency
           ordered, listed in /etc/guestbed/modules), the project's binaries
           in /bin with the shared libraries `ldd` names, /init and the
           helper library /lib/guestbed.sh. Built once per run.
  overlay  /plan.sh and /etc/guestbed/env (GUESTBED_* variables of the
           variant): written per variant.

The archives are left uncompressed by default: QEMU loads them directly and
the TCG guest does not spend seconds in gunzip.
"""

import gzip
import lzma
import os
import shutil
import stat
import struct
import subprocess

from . import log, plan

# Modules the guest loads, in this order (each one's own dependencies, read
# from the .ko's .modinfo "depends=", are loaded first).
MODULES = [
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
    "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_blk",
    "irqbypass", "vfio", "vfio_iommu_type1", "vfio_virqfd", "vfio_pci_core",
    "vfio_pci",
    # the no-IOMMU userspace path (issue 14): BARs through sysfs, no VFIO
    "uio_pci_generic",
    # a filesystem for plans that mount the scratch disk (vio-bind's in-use checks)
    # (ext4 asks the crypto API for crc32c at mount time: load it first)
    "crc32c_generic", "ext4",
    # the guest kernel's own forwarding of the real-TCP test (Tests/guest/plans/net-tcp.sh)
    "bridge",
]
# Modules that may be absent (merged into vfio.ko from Linux 6.2 on).
OPTIONAL_MODULES = {"vfio_virqfd"}

BUSYBOX = "/bin/busybox"


class InitramfsError(RuntimeError):
    pass


def _norm(name):
    return name.replace("-", "_")


def _modname(filename):
    for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if filename.endswith(ext):
            return _norm(filename[: -len(ext)])
    return None


def _read_module(path):
    """The module's ELF bytes, decompressed."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        r = subprocess.run(["zstd", "-dc", path], capture_output=True)
        if r.returncode != 0:
            raise InitramfsError(f"cannot decompress {path} (is zstd installed?)")
        return r.stdout
    return data


def modinfo(elf):
    """key -> [values] from an ELF64 little-endian module's .modinfo section."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise InitramfsError("not an ELF64 little-endian module")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i):
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", elf, base)
        off, size = struct.unpack_from("<QQ", elf, base + 0x18)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    info = {}
    for i in range(shnum):
        name, off, size = section(i)
        end = elf.index(b"\0", stroff + name)
        if elf[stroff + name:end] == b".modinfo":
            for entry in elf[off:off + size].split(b"\0"):
                if b"=" in entry:
                    k, v = entry.decode(errors="replace").split("=", 1)
                    info.setdefault(k, []).append(v)
    return info


class ModuleTree:
    """Index of a modules directory (lib/modules/<kver>)."""

    def __init__(self, moddir):
        self.moddir = moddir
        self.paths = {}
        for dirpath, _, files in os.walk(os.path.join(moddir, "kernel")):
            for fn in files:
                n = _modname(fn)
                if n:
                    self.paths[n] = os.path.join(dirpath, fn)
        self.builtin = set()
        bpath = os.path.join(moddir, "modules.builtin")
        if os.path.exists(bpath):
            with open(bpath) as f:
                for line in f:
                    n = _modname(os.path.basename(line.strip()))
                    if n:
                        self.builtin.add(n)
        self._elf = {}

    def elf(self, name):
        if name not in self._elf:
            self._elf[name] = _read_module(self.paths[name])
        return self._elf[name]

    def depends(self, name):
        deps = modinfo(self.elf(name)).get("depends", [""])[0]
        return [_norm(d) for d in deps.split(",") if d]

    def load_order(self, wanted, optional=()):
        """Dependency-ordered module names; builtins are skipped."""
        order, seen = [], set()

        def visit(n, chain):
            n = _norm(n)
            if n in seen or n in self.builtin:
                return
            if n not in self.paths:
                if n in optional:
                    return
                raise InitramfsError(f"module {n} not found under {self.moddir}"
                                     f" (needed by {' <- '.join(chain) or 'the list'})")
            if n in chain:
                raise InitramfsError(f"module dependency cycle: {chain + [n]}")
            for d in self.depends(n):
                visit(d, chain + [n])
            seen.add(n)
            order.append(n)

        for n in wanted:
            visit(n, [])
        return order


def shared_libs(binary):
    """Absolute paths of the shared objects `ldd` says the binary needs."""
    with open(binary, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return []          # a script
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if r.returncode != 0:
        if "not a dynamic executable" in (r.stdout + r.stderr):
            return []
        raise InitramfsError(f"ldd {binary} failed: {r.stderr.strip()}")
    libs = []
    for line in r.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
            if target == "not found":
                raise InitramfsError(f"{binary}: {line}")
            if target.startswith("/"):
                libs.append(target)
        elif line.startswith("/"):
            libs.append(line.split(" (")[0].strip())
    return libs


def _copy_file(src, dst, mode=None):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    # A binary named like a busybox applet (setpriv) replaces the applet's
    # link; writing through the link would overwrite busybox itself.
    if os.path.islink(dst):
        os.unlink(dst)
    shutil.copyfile(src, dst)          # follows symlinks: the real content
    os.chmod(dst, mode if mode is not None else
             stat.S_IMODE(os.stat(src).st_mode) | 0o444)


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def pack_cpio(stage, out):
    """newc cpio of the directory `stage`, owned by root, sorted."""
    names = ["."]
    for dirpath, dirs, files in os.walk(stage):
        dirs.sort()
        for n in sorted(dirs + files):
            names.append(os.path.relpath(os.path.join(dirpath, n), stage))
    with open(out, "wb") as f:
        r = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
                           cwd=stage, input="\n".join(names).encode() + b"\n",
                           stdout=f, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise InitramfsError(f"cpio failed: {r.stderr.decode().strip()}")
    return out


# systemd-udevd is udevadm under another name (systemd 252).
UDEVADM = "/bin/udevadm"


def add_debs(stage, debs):
    """Unpacks each Debian package into the stage (dpkg-deb -x: its files, not
    its maintainer scripts) with its binaries' shared libraries, and adds the
    host's systemd-udevd to run its udev rules. Returns the libraries needed."""
    libs = set()
    for deb in debs:
        r = subprocess.run(["dpkg-deb", "-x", deb, stage], capture_output=True, text=True)
        if r.returncode != 0:
            raise InitramfsError(f"dpkg-deb -x {deb} failed: {r.stderr.strip()}")
        listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True)
        names = subprocess.run(["tar", "-t"], input=listing.stdout, capture_output=True).stdout.decode()
        for name in names.split():
            path = os.path.join(stage, name.lstrip("./"))
            if os.path.isfile(path) and not os.path.islink(path) and os.access(path, os.X_OK):
                libs.update(shared_libs(path))
    if not os.path.exists(UDEVADM):
        raise InitramfsError(f"{UDEVADM} missing (package udev): the package's udev rules need systemd-udevd")
    dst = os.path.join(stage, "bin", "udevadm")
    if os.path.lexists(dst):
        os.unlink(dst)
    _copy_file(UDEVADM, dst, 0o755)
    os.makedirs(os.path.join(stage, "lib", "systemd"), exist_ok=True)
    link = os.path.join(stage, "lib", "systemd", "systemd-udevd")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink("/bin/udevadm", link)
    libs.update(shared_libs(UDEVADM))
    return libs


# Where a rebuilt vfio.ko with VFIO's no-IOMMU mode lies in the guest (not
# loaded at boot; the no-IOMMU plan swaps it in: plans/fallback-noiommu.sh).
NOIOMMU_VFIO = "lib/modules/noiommu/vfio.ko"


def build_base(kernel, binaries, workdir, modules=MODULES, optional=OPTIONAL_MODULES, debs=(),
               noiommu_vfio=None, host_files=()):
    """Stage and pack the base archive; returns (path, module load order).
    `debs`: Debian packages unpacked into it, with systemd-udevd (add_debs).
    `noiommu_vfio`: a vfio.ko built with CONFIG_VFIO_NOIOMMU (noiommu.py),
    staged at NOIOMMU_VFIO. `host_files`: host files copied to the same path
    in the guest with the shared libraries they need (e.g. the DPDK PMD
    plugins dpdk-testpmd loads from its plugin directory)."""
    stage = os.path.join(workdir, "initramfs-base")
    if os.path.exists(stage):
        shutil.rmtree(stage)
    for d in ("bin", "sbin", "etc/guestbed", "lib/modules", "proc", "sys",
              "dev", "tmp", "run", "mnt", "root"):
        os.makedirs(os.path.join(stage, d), exist_ok=True)

    # busybox and its applets
    if not os.path.exists(BUSYBOX):
        raise InitramfsError(f"{BUSYBOX} missing (package busybox-static)")
    if shared_libs(BUSYBOX):
        raise InitramfsError(f"{BUSYBOX} is not static: install busybox-static")
    _copy_file(BUSYBOX, os.path.join(stage, "bin", "busybox"), 0o755)
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True,
                             text=True, check=True).stdout.split()
    for a in applets:
        if a not in ("busybox", "init", "linuxrc") and "/" not in a:
            os.symlink("busybox", os.path.join(stage, "bin", a))
    os.symlink("../bin/busybox", os.path.join(stage, "sbin", "poweroff"))

    # modules
    tree = ModuleTree(kernel.modules_dir)
    order = tree.load_order(modules, optional)
    for n in order:
        with open(os.path.join(stage, "lib", "modules", n + ".ko"), "wb") as f:
            f.write(tree.elf(n))
    _write(os.path.join(stage, "etc", "guestbed", "modules"), "\n".join(order) + "\n")
    if noiommu_vfio:
        _copy_file(noiommu_vfio, os.path.join(stage, NOIOMMU_VFIO))

    # the project's binaries and their shared libraries
    libs = add_debs(stage, debs) if debs else set()
    for b in binaries:
        if not os.path.isfile(b):
            raise InitramfsError(f"binary {b} does not exist")
        _copy_file(b, os.path.join(stage, "bin", os.path.basename(b)), 0o755)
        libs.update(shared_libs(b))
    for h in host_files:
        if not os.path.isfile(h):
            raise InitramfsError(f"host file {h} does not exist")
        _copy_file(h, os.path.join(stage, h.lstrip("/")))
        libs.update(shared_libs(h))
    for lib in sorted(libs):
        _copy_file(lib, os.path.join(stage, lib.lstrip("/")))
    _write(os.path.join(stage, "etc", "guestbed", "binaries"),
           "".join(os.path.basename(b) + "\n" for b in binaries))

    _write(os.path.join(stage, "init"), plan.init_script(), 0o755)
    _write(os.path.join(stage, "lib", "guestbed.sh"), plan.guest_library())

    out = pack_cpio(stage, os.path.join(workdir, "initramfs-base.cpio"))
    size = os.path.getsize(out)
    log(f"initramfs base: {size / 1e6:.1f} MB, modules: {' '.join(order)}")
    return out, order


def build_variant(base, plan_text, env_text, workdir):
    """base + overlay(/plan.sh, /etc/guestbed/env) -> initrd path."""
    stage = os.path.join(workdir, "overlay")
    if os.path.exists(stage):
        shutil.rmtree(stage)
    _write(os.path.join(stage, "plan.sh"), plan_text, 0o755)
    _write(os.path.join(stage, "etc", "guestbed", "env"), env_text)
    overlay = pack_cpio(stage, os.path.join(workdir, "overlay.cpio"))
    initrd = os.path.join(workdir, "initrd.cpio")
    with open(initrd, "wb") as out:
        for part in (base, overlay):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    shutil.rmtree(stage)
    os.unlink(overlay)
    return initrd
