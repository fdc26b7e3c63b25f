#!/usr/bin/env python3
"""Host-side check of a disk image vio-fio wrote with --verify=crc32c: every
`bs`-byte block of [offset, offset + length) carries vio-fio's header (magic
"VIOF", length, its own offset, seed, CRC-32C; layout in
Sources/Tools/vio-fio/Verify.swift) and its checksum holds. Reads the file
itself, not through the program under test; the checker is the guest test
bed's (tools/guestbed/blktest.py), so both read images the same way.

    vio_fio_verify.py IMAGE OFFSET LENGTH BS
Prints one line `fio-host-file: ...`; exits 0 when every block is intact."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from guestbed.blktest import verify_range  # noqa: E402


def main():
    image, offset, length, bs = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0), int(sys.argv[4], 0)
    with open(image, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        print(f"fio-host-file: {image} has {len(data)} bytes at {offset}, {length} expected")
        return 1
    ok, text = verify_range(data, offset, bs)
    print(f"fio-host-file: {text.replace('in the image', 'in the image file')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
