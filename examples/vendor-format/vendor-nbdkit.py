#!/usr/bin/env -S nbdkit python
"""nbdkit plugin (Python) serving a toy vendor backup (see vendor-backup.py) as the disk or
volume it holds:  nbdkit ./vendor-nbdkit.py file=BACKUP.vbk

What BootLab asks of it (docs/plugin-protocol.md): get_size and pread; read-only; no writes,
no extents (everything reads as data), any thread model.
"""
import os
import sys

import nbdkit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vendor_reader import VendorBackup  # noqa: E402

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
