"""Plumbing every layer shares, written once: the version, atomic file writes, the one PID-reporting lock,
``slug`` for file names and the default number of loader workers.

Imports nothing from fmprobe but the errors (and no torch), so the torch-free layers can use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fmprobe.errors import CacheError

__version__ = "0.1.0"

log = logging.getLogger("fmprobe")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest's capture, a notebook's redirection)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def _install_default_handler() -> None:
    """Progress and diagnostics ("cache hit: ...", "resuming ...") reach stderr as plain lines, from the CLI and
    from a notebook alike, unless the application configured the ``fmprobe`` logger itself. Never stdout: stdout
    holds only results."""
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


_install_default_handler()


def lazy_attributes(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) that imports ``names[attr]`` on first use and keeps the value in
    the module: the public facades stay light (no torch) until a heavy name is actually used."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (dataset and backbone names in cache and run paths)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def user_cache_dir() -> Path:
    """fmprobe's per-user cache (shape and split caches): ``$FMPROBE_CACHE``, else ``~/.cache/fmprobe``."""
    return Path(os.environ.get("FMPROBE_CACHE", Path.home() / ".cache" / "fmprobe"))


def default_workers() -> int:
    """Image-decoding worker processes: one per spare core, at most 4 (more only compete with the model)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def atomic_write(path: Path, write: Callable[[Path], None], fsync: bool = True) -> None:
    """Write ``path`` via ``write(tmp)`` to a temporary file beside it, fsync it and rename it into place.

    A reader sees the old file or the new one, never a half-written one; a failure (or a kill) leaves ``path``
    as it was and removes the temporary file (a kill leaves only a ``.<name>.*.tmp`` beside it)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if fsync:
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    """:func:`atomic_write` of a UTF-8 text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """:func:`atomic_write` of a binary file."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


@contextlib.contextmanager
def exclusive(lock_path: Path, wait: bool = True, what: str = "this cache") -> Iterator[None]:
    """Hold ``lock_path`` exclusively; if another process holds it, say who (its pid) and wait, or fail if not
    ``wait``. ``what`` names the thing the lock protects in those messages."""
    lock_path = Path(lock_path)
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
                    f"{lock_path}: another fmprobe process (pid {holder}) is writing {what}. Wait for it to "
                    "finish, or stop it; its committed work is kept either way."
                ) from None
            log.warning("fmprobe: waiting for pid %s, which is writing %s (%s)", holder, what, lock_path.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock
