"""Integrity of a feature file, checked before the HDF5 library reads a byte of it.

HDF5 trusts its own metadata: a single flipped byte there can make it raise anything, crash the process or
loop for minutes inside a string read. So a feature file is *sealed* when it is written: the HDF5 user block
(the first :data:`SEAL_SIZE` bytes, which HDF5 reserves for applications and never reads) records the SHA-256
and size of everything after it. Opening reads only that block and hashes the rest with plain file reads; any
change (a flipped byte, a truncation, an attribute edited with h5py) is refused by name before h5py runs.

Files written before seals existed start with the HDF5 signature instead. They are still served (their data is
unchanged), but the first parse runs in a child process with a timeout, so a damaged one ends in a named error
rather than a segfault or a hang; their attributes are then cross-checked against the stored fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

from fmprobe.errors import CacheError

log = logging.getLogger(__name__)

SEAL_SIZE = 512  # the smallest HDF5 user block
SEAL_MAGIC = b"FMPROBE-SEAL-1\n"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
REBUILD = "Rebuild it with `fmprobe extract ... --force` (the same command plus --force)."
LEGACY_TIMEOUT_S = 60.0  # plus one second per 50 MB: a parse that takes longer is a hang on damaged metadata
_noted: set[Path] = set()


def _seal_block(digest: str, size: int) -> bytes:
    return (SEAL_MAGIC + f"sha256 {digest}\nsize {size}\n".encode()).ljust(SEAL_SIZE, b"\0")


def _digest_after_block(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        fh.seek(SEAL_SIZE)
        while chunk := fh.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


def seal(path: Path | str) -> None:
    """Record the checksum of the file in its user block (written with ``userblock_size=SEAL_SIZE``).

    The writer calls it once, before the rename; call it yourself only after a deliberate edit with h5py."""
    path = Path(path)
    with path.open("rb") as fh:
        if len(fh.read(SEAL_SIZE)) < SEAL_SIZE:
            raise CacheError(f"{path}: too short to be sealed (written without an HDF5 user block).")
    block = _seal_block(_digest_after_block(path), path.stat().st_size)
    with path.open("r+b") as fh:
        fh.write(block)


def verify(path: Path) -> bool:
    """True when ``path`` is sealed and intact; False when it predates seals (see :func:`verify_unsealed`).

    Raises a named :class:`CacheError` for any other first block, a size change or a checksum mismatch."""
    try:
        with path.open("rb") as fh:
            head = fh.read(SEAL_SIZE)
        size = path.stat().st_size
    except OSError as err:
        raise CacheError(f"{path}: cannot read the feature file ({os.strerror(err.errno) if err.errno else err}).") from err
    if head.startswith(HDF5_SIGNATURE):
        return False
    if not head.startswith(SEAL_MAGIC):
        raise CacheError(f"{path}: not a sealed fmprobe feature file (its first bytes are damaged or foreign). {REBUILD}")
    lines = head[len(SEAL_MAGIC) :].split(b"\n")
    if len(lines) < 2 or lines[1] != f"size {size}".encode():
        recorded = lines[1].decode(errors="replace") if len(lines) > 1 else "no size"
        raise CacheError(
            f"{path}: the file was truncated or changed after it was written (its seal records {recorded!r}, it has "
            f"{size} bytes). {REBUILD}"
        )
    if head != _seal_block(_digest_after_block(path), size):
        raise CacheError(
            f"{path}: checksum mismatch: the file changed after it was written (a damaged byte or an edit). {REBUILD}"
        )
    return True


def verify_unsealed(path: Path) -> None:
    """Parse an unsealed file once in a child process with a timeout: HDF5 may crash or hang on damaged metadata."""
    timeout = LEGACY_TIMEOUT_S + path.stat().st_size / 50e6
    code = "import sys; from fmprobe.store.features import FeatureFile; FeatureFile(sys.argv[1], _trusted=True)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        child = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CacheError(f"{path}: reading its HDF5 metadata did not finish in {timeout:.0f} s: the file is damaged. {REBUILD}") from None
    if child.returncode == 0:
        if path not in _noted:
            _noted.add(path)
            log.info(f"{path.name}: written before fmprobe sealed its feature files; checked in a separate process. --force re-extracts it sealed.")
        return
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    named = [line.split("CacheError: ", 1)[1] for line in lines if "CacheError: " in line]
    if named:
        raise CacheError(named[-1])
    why = f"the HDF5 library crashed reading it (signal {-child.returncode})" if child.returncode < 0 else (lines[-1] if lines else f"exit {child.returncode}")
    raise CacheError(f"{path}: damaged HDF5 metadata ({why}). {REBUILD}")
