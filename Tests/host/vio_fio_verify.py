#!/usr/bin/env python3
"""Host-side check of a disk image vio-fio wrote with --verify=crc32c: every
`bs`-byte block of [offset, offset + length) carries vio-fio's header (magic
"VIOF", length, its own offset, seed, CRC-32C; layout in
Sources/Tools/vio-fio/Verify.swift) and its checksum holds. Reads the file
itself, not through the program under test.

    vio_fio_verify.py IMAGE OFFSET LENGTH BS
Prints one line `fio-host-file: ...`; exits 0 when every block is intact."""
import struct
import sys

MAGIC = 0x464F4956


def table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = table()


def crc32c(data, crc=0):
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def why_bad(block, offset):
    magic, length, at, _seed, stored, _pad = struct.unpack_from("<IIQQII", block, 0)
    if magic != MAGIC:
        return f"block at {offset}: no vio-fio header (magic 0x{magic:08x})"
    if length != len(block):
        return f"block at {offset}: header length {length}, expected {len(block)}"
    if at != offset:
        return f"block at {offset}: header names offset {at}"
    actual = crc32c(block[32:], crc32c(block[:24]))
    if actual != stored:
        return f"block at {offset}: crc32c 0x{actual:08x} != stored 0x{stored:08x}"
    return None


def main():
    image, offset, length, bs = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0), int(sys.argv[4], 0)
    with open(image, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        print(f"fio-host-file: {image} has {len(data)} bytes at {offset}, {length} expected")
        return 1
    bad = [w for w in (why_bad(data[i:i + bs], offset + i) for i in range(0, length, bs)) if w]
    if bad:
        print(f"fio-host-file: {len(bad)} of {length // bs} blocks bad, first: {bad[0]}")
        return 1
    print(f"fio-host-file: {length // bs} blocks of {bs} bytes verified in the image file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
