"""An exclusive lock file per cache, so two extractions of the same cache never interleave their writes."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from fmprobe.errors import CacheError


@contextlib.contextmanager
def exclusive(lock_path: Path, wait: bool = True) -> Iterator[None]:
    """Hold ``lock_path`` exclusively; if another process holds it, say who and wait (or fail if not ``wait``)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise CacheError(f"{lock_path}: cannot create lock file ({err.strerror}). Is the folder writable?") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            if not wait:
                raise CacheError(
                    f"{lock_path}: another fmprobe process (pid {holder}) is writing this cache. Wait for it to "
                    "finish, or stop it; its committed work is kept either way."
                ) from None
            print(f"fmprobe: waiting for pid {holder}, which is writing this cache ({lock_path.name})", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock
