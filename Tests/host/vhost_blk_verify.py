#!/usr/bin/env python3
"""Host-side check of a disk image vio-vhost-check wrote through
qemu-storage-daemon: recomputes the pattern itself (it does not trust the
program's read-back) and checks that every written block holds it and every
other byte of the image is still zero.

usage: vhost_blk_verify.py IMAGE SEED BLOCK_SIZE SECTOR[,SECTOR...]

Pattern (Sources/Tools/vio-vhost-check/Pattern.swift): 64-bit little-endian words
  word(seed, sector, i) = splitmix64(seed ^ (sector * 0x9E3779B97F4A7C15) ^ i)
for word i (0..63) of 512-byte sector `sector`. Prints one CHECK line; exit 0 iff it passes.
"""
import struct
import sys

M = (1 << 64) - 1


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def sector_bytes(seed, sector):
    return b"".join(struct.pack("<Q", splitmix64(seed ^ ((sector * 0x9E3779B97F4A7C15) & M) ^ i)) for i in range(64))


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    image, seed, block, sectors = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    starts = [int(s) for s in sectors.split(",") if s]
    data = bytearray(open(image, "rb").read())
    per_block = block // 512
    bad = []
    for start in starts:
        for k in range(per_block):
            s = start + k
            got = bytes(data[s * 512:(s + 1) * 512])
            if got != sector_bytes(seed, s):
                bad.append(s)
            data[s * 512:(s + 1) * 512] = bytes(512)  # cleared: the rest must be zero
    stray = len(data) - data.count(0)
    ok = not bad and stray == 0 and starts
    detail = (f"{len(starts)} blocks of {block} B in {image}: {len(bad)} sectors differ from the pattern"
              f"{' (first ' + ','.join(map(str, bad[:5])) + ')' if bad else ''}, {stray} non-zero bytes outside them")
    print(f"CHECK {'PASS' if ok else 'FAIL'} blk-host-file: {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
