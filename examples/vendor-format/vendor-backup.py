#!/usr/bin/env python3
"""The backup tool of a toy "vendor" format (the worked example of docs/bring-your-own-format.md).

    vendor-backup.py backup SOURCE OUT    write OUT (a .vbk) from the disk or volume image SOURCE

Read it back with its nbdkit plugin:  nbdkit -U - python ./vendor-nbdkit.py file=OUT --run 'nbdcopy "$uri" image.raw'

The format, all integers little-endian:

    header (64 bytes)  magic "VNDRBKP1", u32 version (1), u32 chunk size, u64 image size,
                       u64 chunk count, u64 index offset, u32 CRC-32 of bytes 0..39, zero padding
    chunks             each non-zero chunk of the image, gzip-compressed (deterministic: mtime 0)
    index              per chunk: u64 offset, u32 compressed length (0: an all-zero chunk),
                       u32 CRC-32 of the uncompressed chunk

It stands for a backup product's own format: BootLab knows nothing of it; the nbdkit plugin
vendor-nbdkit.py reads it.
"""
import gzip
import os
import struct
import sys
import zlib

MAGIC = b"VNDRBKP1"
CHUNK = 256 * 1024
HEADER = struct.Struct("<8sIIQQQI")


def backup(source, out):
    with open(source, "rb") as src:
        src.seek(0, 2)
        size = src.tell()
        src.seek(0)
        count = (size + CHUNK - 1) // CHUNK
        index = []
        with open(out + ".partial", "wb") as dst:
            dst.write(b"\0" * 64)
            for _ in range(count):
                data = src.read(CHUNK)
                crc = zlib.crc32(data)
                if data.count(0) == len(data):
                    index.append((0, 0, crc))
                    continue
                packed = gzip.compress(data, compresslevel=6, mtime=0)
                index.append((dst.tell(), len(packed), crc))
                dst.write(packed)
            index_offset = dst.tell()
            for entry in index:
                dst.write(struct.pack("<QII", *entry))
            head = HEADER.pack(MAGIC, 1, CHUNK, size, count, index_offset, 0)[:40]
            dst.seek(0)
            dst.write(head + struct.pack("<I", zlib.crc32(head)))
    os.replace(out + ".partial", out)



if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "backup":
        sys.exit(__doc__)
    backup(sys.argv[2], sys.argv[3])
