"""Work dealt across independent processes (``--shard I/N``, e.g. a SLURM job array), with no coordinator.

An item (a probe cell, an extraction job, a finetune run) belongs to shard ``hash(key) mod N``: every process
computes the same answer from the item alone, so the N shards together cover each item exactly once, for any N
and whatever else each process sees. The "I/N" text is parsed by the extraction's shard parser (one syntax, one
error message for every command).
"""

from __future__ import annotations

import hashlib

from fmprobe.store.shards import parse_shard

Part = tuple[int, int]  # (shard index, shard count); one process is (0, 1)
WHOLE: Part = (0, 1)


def as_part(shard: str | Part | None) -> Part:
    """``"2/8"``, ``(2, 8)`` or None (everything) as a checked (index, count)."""
    if shard is None:
        return WHOLE
    return parse_shard(shard) if isinstance(shard, str) else parse_shard(f"{shard[0]}/{shard[1]}")


def shard_of(key: str, count: int) -> int:
    """The shard (of ``count``) that ``key`` is dealt to: a stable hash, the same on every machine and Python."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % count


def dealt(key: str, part: Part) -> bool:
    """Whether the item named ``key`` belongs to shard ``part``."""
    return part[1] == 1 or shard_of(key, part[1]) == part[0]


__all__ = ["WHOLE", "Part", "as_part", "dealt", "shard_of"]
