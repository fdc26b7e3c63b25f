"""Guest test bed: boots a QEMU (TCG) guest with a vIOMMU and real
virtio-net-pci / virtio-blk-pci devices, runs the project's binaries inside
it, and collects CHECK lines from the serial console.

Modules:
  deps       install the host packages the test bed needs (apt, once)
  kernel     fetch and cache the Debian guest kernel + modules
  initramfs  build the guest initramfs (busybox, modules, binaries, /init)
  plan       the in-guest shell pieces: /init, helper library, test plans
  variants   device variants (split, packed, queue sizes, ...) -> QEMU args
  netserver  host-side TCP server behind `-netdev stream` (records frames)
  qmp        a tiny QMP client (raw JSON over the unix socket)
  hostchecks host-side checks the guest asks for (HOSTCHECK lines) and hooks
  boot       one QEMU boot: console parsing, HOSTREQ handling, results
  cli        `tools/guest-test`
"""

import os

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE_DIR = os.path.join(REPO_ROOT, ".cache")


def log(msg):
    """Harness progress output (stderr keeps stdout for results)."""
    import sys
    print(f"[guest-test] {msg}", file=sys.stderr, flush=True)
