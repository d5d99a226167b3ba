#!/usr/bin/env -S nbdkit python
"""nbdkit plugin (Python) serving a toy vendor backup (see vendor-backup.py) as the disk or
volume it holds:  nbdkit ./vendor-nbdkit.py file=BACKUP.vbk

What BootLab asks of it (docs/plugin-protocol.md): get_size and pread; read-only; no writes,
no extents (everything reads as data), any thread model.
"""
import builtins
import gzip
import struct
import zlib

import nbdkit

MAGIC = b"VNDRBKP1"
MAX_CHUNK = 16 * 1024 * 1024


class FormatError(Exception):
    pass


class VendorBackup:
    def __init__(self, path):
        self.f = builtins.open(path, "rb")
        self.f.seek(0, 2)
        file_size = self.f.tell()
        self.f.seek(0)
        head = self.f.read(64)
        if len(head) < 64 or head[:8] != MAGIC:
            raise FormatError(f"{path}: not a vendor backup (bad magic)")
        magic, version, chunk, size, count, index_offset, crc = struct.unpack("<8sIIQQQI", head[:44])
        if zlib.crc32(head[:40]) != crc:
            raise FormatError(f"{path}: header checksum mismatch")
        if version != 1 or not 4096 <= chunk <= MAX_CHUNK:
            raise FormatError(f"{path}: unsupported version {version} or chunk size {chunk}")
        if count != (size + chunk - 1) // chunk or index_offset + 16 * count != file_size:
            raise FormatError(f"{path}: index at {index_offset} with {count} entries does not end the file ({file_size} bytes)")
        self.f.seek(index_offset)
        raw = self.f.read(16 * count)
        self.index = [struct.unpack_from("<QII", raw, 16 * i) for i in range(count)]
        for i, (off, n, _) in enumerate(self.index):
            if n and (off < 64 or off + n > index_offset):
                raise FormatError(f"{path}: chunk {i} at {off}+{n} lies outside the data area")
        self.path, self.chunk_size, self.size, self.count = path, chunk, size, count
        self.cache = {}

    def chunk(self, i):
        """The uncompressed bytes of chunk i (the last one may be short)."""
        if i in self.cache:
            return self.cache[i]
        off, n, crc = self.index[i]
        length = min(self.chunk_size, self.size - i * self.chunk_size)
        if n == 0:
            data = bytes(length)
        else:
            self.f.seek(off)
            data = gzip.decompress(self.f.read(n))
        if len(data) != length or zlib.crc32(data) != crc:
            raise FormatError(f"{self.path}: chunk {i} is damaged (length or CRC-32)")
        if len(self.cache) > 64:
            self.cache.clear()
        self.cache[i] = data
        return data

    def read(self, offset, count):
        out = bytearray()
        while count > 0:
            i, within = divmod(offset, self.chunk_size)
            data = self.chunk(i)[within:within + count]
            out += data
            offset += len(data)
            count -= len(data)
        return bytes(out)


API_VERSION = 2
path = None


def config(key, value):
    global path
    if key != "file":
        raise RuntimeError(f"unknown parameter {key}")
    path = value


def config_complete():
    if path is None:
        raise RuntimeError("file=BACKUP is required")


def open(readonly):
    return VendorBackup(path)


def get_size(h):
    return h.size


def can_write(h):
    return False


def pread(h, buf, offset, flags):
    buf[:] = h.read(offset, len(buf))


def thread_model():
    return nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS
