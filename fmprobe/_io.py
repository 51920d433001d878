"""Plumbing every layer shares, written once: the version, atomic file writes, the one PID-reporting lock,
``slug`` for file names, the default number of loader workers and the one way a renamed keyword keeps working.

Imports nothing from fmprobe but the errors (and no torch), so the torch-free layers can use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob
import importlib
import logging
import os
import re
import secrets
import socket
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

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


def lazy_dir(module: str, names: dict[str, str]) -> Callable[[], list[str]]:
    """A module-level ``__dir__`` (PEP 562) listing the lazy public names with what is already loaded, so
    ``dir(fmprobe)`` and tab completion in a notebook show the API before anything heavy is imported."""

    def __dir__() -> list[str]:
        namespace = vars(sys.modules[module])
        public = namespace.get("__all__", [*names])
        submodules = [n for n, v in namespace.items() if isinstance(v, types.ModuleType) and not n.startswith("_")]
        return sorted({*public, *names, *submodules})

    return __dir__


def renamed(keywords: Mapping[str, Any], renames: Mapping[str, str], where: str, stacklevel: int = 3) -> dict[str, Any]:
    """``keywords`` with each deprecated name of ``renames`` (old -> new) replaced by its new name, warning
    (``DeprecationWarning``) that names the new one; giving both names is a ``TypeError``, as Python's own."""
    out = dict(keywords)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise TypeError(f"{where}: got {new}= and its deprecated name {old}=; give {new}= only.")
        warnings.warn(f"{where}: {old}= is deprecated; use {new}= instead.", DeprecationWarning, stacklevel=stacklevel)
        out[new] = out.pop(old)
    return out


F = TypeVar("F", bound=Callable[..., Any])


def accepts_renamed(renames: Mapping[str, str]) -> Callable[[F], F]:
    """Decorate a function (or a class: its ``__init__``) so the deprecated keyword names of ``renames`` still work
    (:func:`renamed`); its signature and docstring show only the new names."""

    def decorate(obj: F) -> F:
        target = obj.__init__ if isinstance(obj, type) else obj  # type: ignore[misc]
        where = obj.__qualname__

        @functools.wraps(target)
        def wrapper(*args: Any, **keywords: Any) -> Any:
            return target(*args, **renamed(keywords, renames, where))

        if isinstance(obj, type):
            obj.__init__ = wrapper  # type: ignore[misc]
            return obj
        return wrapper  # type: ignore[return-value]

    return decorate


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (dataset and backbone names in cache and run paths)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def user_cache_dir() -> Path:
    """fmprobe's per-user cache (shape and split caches): ``$FMPROBE_CACHE``, else ``~/.cache/fmprobe``."""
    return Path(os.environ.get("FMPROBE_CACHE", Path.home() / ".cache" / "fmprobe"))


def default_workers() -> int:
    """Image-decoding worker processes: one per spare core, at most 4 (more only compete with the model)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _owner() -> str:
    """``pid<N>@<host>``: who writes a temporary file, so a later run can tell a dead writer's leftovers."""
    return f"pid{os.getpid()}@{re.sub(r'[^A-Za-z0-9-]+', '-', socket.gethostname()) or 'host'}"


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[0-9a-f]+\.tmp$")


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that carries the writer's pid and host:
    ``.<name>.pid<N>@<host>.<random>.tmp`` (see :func:`remove_dead_temporaries`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_owner()}.{secrets.token_hex(4)}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def remove_dead_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files in ``folder`` (of target ``name``, or of any) that a process of this host left
    when it was killed: those whose writer's pid no longer exists. Says so in one line; returns what it removed."""
    pattern = f".{glob.escape(name)}.pid*.tmp" if name is not None else ".*.pid*.tmp"
    host = _owner().split("@", 1)[1]
    removed = []
    with contextlib.suppress(OSError):
        for candidate in Path(folder).glob(pattern):
            match = _TEMPORARY.match(candidate.name)
            if match and match["host"] == host and not pid_alive(int(match["pid"])):
                with contextlib.suppress(FileNotFoundError):
                    candidate.unlink()
                    removed.append(candidate)
    if removed:
        log.info(f"removed {len(removed)} leftover temporary file(s) of killed fmprobe processes in {folder}: "
                 + ", ".join(p.name for p in removed[:3]) + (" ..." if len(removed) > 3 else ""))  # fmt: skip
    return removed


_SWEPT: set[str] = set()  # folders this process already cleared of dead writers' temporaries


def _sweep_once(folder: Path) -> None:
    """:func:`remove_dead_temporaries` of ``folder`` the first time this process writes there: a folder of 10k
    prediction files is then listed once per run, not once per write."""
    key = os.path.abspath(folder)
    if key not in _SWEPT:
        _SWEPT.add(key)
        remove_dead_temporaries(folder)


def atomic_write(path: Path, write: Callable[[Path], None], fsync: bool = True) -> None:
    """Write ``path`` via ``write(tmp)`` to a temporary file beside it, fsync it and rename it into place.

    A reader sees the old file or the new one, never a half-written one; a failure removes the temporary file,
    and a kill leaves only ``.<name>.pid<N>@<host>.<random>.tmp`` beside it, which the first write into that
    folder of a later process removes once process N is gone."""
    path = Path(path)
    _sweep_once(path.parent)
    tmp = temporary_path(path)
    try:
        write(tmp)
        if fsync:
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def prove_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and write, fsync and remove a small file in it; raises the ``OSError``.

    A real write, flushed: permission bits say nothing to root, a read-only mount shows only on writing and a full
    disk often only on the flush. Callers turn the error into their layer's message (``--out`` cache folder,
    results, report) before any work whose output would be lost. The file is pid-named like every temporary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = temporary_path(folder / ".fmprobe-write-test")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"fmprobe write test\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    return folder


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    """:func:`atomic_write` of a UTF-8 text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """:func:`atomic_write` of a binary file."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


@contextlib.contextmanager
def exclusive(lock_path: Path, wait: bool = True, what: str = "this cache", remove: bool = False) -> Iterator[None]:
    """Hold ``lock_path`` exclusively; if another process holds it, say who (its pid) and wait, or fail if not
    ``wait``. ``what`` names the thing the lock protects in those messages. ``remove`` deletes the lock file
    before releasing it (a process that was waiting on it notices and locks the path afresh), so a finished
    piece of work leaves no lock file behind."""
    lock_path = Path(lock_path)
    fd = _acquire(lock_path, wait, what)
    _write_pid(fd, lock_path)  # closes the descriptor (releasing the lock) when it fails
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if remove:
                lock_path.unlink(missing_ok=True)
            else:
                os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock


def _acquire(lock_path: Path, wait: bool, what: str) -> int:
    """An open descriptor of ``lock_path`` holding its flock; retries when the file was removed (or replaced) by
    its previous holder while this process waited, so two processes never hold two different inodes."""
    while True:
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
            if _same_file(fd, lock_path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _write_pid(fd: int, lock_path: Path) -> None:
    """Record the holder's pid in the lock file (what a waiter's message names)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OSError as err:
        os.close(fd)
        raise CacheError(
            f"{lock_path}: cannot write the lock file ({os.strerror(err.errno) if err.errno else err}). Free space "
            "on that disk (or fix the folder's permissions) and run the same command again."
        ) from None


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; else what :mod:`platform` knows), for provenance records."""
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, shell-quoted so it can be pasted back into a shell (``python -m fmprobe`` and
    the installed script read as ``fmprobe``, not as the path of the file Python was started with)."""
    import shlex

    args = list(sys.argv if argv is None else argv) or [""]
    first = Path(args[0])
    if first.name == "fmprobe" or (first.name == "__main__.py" and first.parent.name == "fmprobe"):
        args[0] = "fmprobe"
    return shlex.join(args)
