"""Sharded extraction: which batches a shard owns, where its journal lives, and the merge into one file.

Batches are numbered over all splits in extraction order and dealt round-robin: shard ``i`` of ``n`` owns every
batch ``g`` with ``g % n == i``. A batch holds the same images whatever the number of shards, so the merged file
is identical to what one process would have written. A single process is shard 0 of 1.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from fmprobe._io import exclusive
from fmprobe.errors import CacheError
from fmprobe.store.features import SplitLayout, write_feature_file
from fmprobe.store.journal import Batch, Journal

log = logging.getLogger(__name__)

PlannedBatch = tuple[str, int, int]  # split, first row, number of rows


def plan_batches(sizes: Mapping[str, int], batch_size: int, shard: tuple[int, int] = (0, 1)) -> list[PlannedBatch]:
    index, count = shard
    planned, g = [], 0
    for split, n in sizes.items():
        for start in range(0, n, batch_size):
            if g % count == index:
                planned.append((split, start, min(batch_size, n - start)))
            g += 1
    return planned


def parse_shard(text: str) -> tuple[int, int]:
    """``'2/8'`` -> ``(2, 8)``, with an error that says what is expected."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise CacheError(f"--shard {text!r}: write I/N with 0 <= I < N, e.g. --shard 0/4 (SLURM: $SLURM_ARRAY_TASK_ID/N).")
    return int(match.group(1)), int(match.group(2))


def journal_path(cache: Path, shard: tuple[int, int] = (0, 1)) -> Path:
    if shard[1] == 1:
        return cache.with_name(cache.name + ".journal")
    return cache.with_name(f"{cache.name}.part{shard[0]}of{shard[1]}.journal")


def _planned(journal: Journal) -> list[PlannedBatch]:
    header = journal.header
    sizes = {s: int(v[0]) for s, v in header["layout"].items()}  # type: ignore[union-attr]
    return plan_batches(sizes, int(header["batch_size"]), tuple(header["shard"]))  # type: ignore[arg-type, call-overload]


def missing_batches(journal: Journal) -> list[PlannedBatch]:
    done = {(b.split, b.start) for b in journal.batches()}
    return [p for p in _planned(journal) if (p[0], p[1]) not in done]


def part_counts(cache: Path) -> set[int]:
    """The shard counts N of the part journals lying next to ``cache``."""
    pattern = re.compile(re.escape(cache.name) + r"\.part(\d+)of(\d+)\.journal$")
    return {int(m.group(2)) for p in cache.parent.glob(cache.name + ".part*.journal") if (m := pattern.match(p.name))}


def merge(cache: Path, shards: int | None = None, extra_attrs: Mapping[str, object] | None = None) -> Path:
    """Assemble the final feature file from all part journals (or the single journal) of ``cache``.

    Sharded extraction (``fmprobe extract --shard I/N``) leaves one journal per shard; this writes the one feature
    file they make, identical to what a single process would have written (``fmprobe merge``). Refuses, naming the
    parts, while any part is missing or incomplete. Idempotent: a finished file is left as it is.

    Parameters
    ----------
    cache : Path
        The feature file to assemble (its journals lie beside it).
    shards : int or None, optional
        The number of shards N; None: read from the journals found (refused when they disagree).
    extra_attrs : Mapping or None, optional
        Added to the file's root attributes (the measured images/s).

    Returns
    -------
    Path
        ``cache``, now a complete feature file.

    Raises
    ------
    fmprobe.errors.CacheError
        A part is missing, incomplete or of another extraction (the message names it and the command to run).

    Examples
    --------
    >>> from fmprobe import merge_shards
    >>> merge_shards("features/demo/efficientnet_lite0__3f2a9c.h5")  # doctest: +SKIP
    PosixPath('features/demo/efficientnet_lite0__3f2a9c.h5')
    """
    cache = Path(cache)
    if shards is None:
        counts = part_counts(cache)
        if len(counts) > 1:
            raise CacheError(f"{cache}: part journals of different shard counts {sorted(counts)} lie beside it; delete the stale ones.")
        shards = counts.pop() if counts else 1
    if shards == 1 and not cache.exists() and not journal_path(cache).exists():  # before the lock: no folder needed
        raise CacheError(
            f"{cache}: no such file, and no extraction journal beside it to assemble it from (a typo in the path, a "
            "deleted journal, or an extraction never started). Give the path `fmprobe extract` printed, or run that "
            "`fmprobe extract` command again (add --force to start afresh)."
        )
    with exclusive(cache.with_name(cache.name + ".lock"), remove=True):  # removed while held: no second lock inode
        if cache.exists():
            return cache
        paths = [journal_path(cache, (i, shards)) for i in range(shards)]
        absent = [p.name for p in paths if not p.exists()]
        if absent:
            raise CacheError(
                f"{cache.name}: cannot merge yet, {len(absent)} of {shards} part(s) not started: {', '.join(absent[:4])}. "
                "Run the missing shards (fmprobe extract ... --shard I/N)."
            )
        journals = [Journal.read(p) for p in paths]
        first = journals[0].header
        for journal in journals[1:]:
            if journal.header["fingerprint"] != first["fingerprint"] or journal.header["batch_size"] != first["batch_size"]:
                raise CacheError(f"{journal.path}: written for another extraction than {paths[0].name}; delete it and re-run that shard.")
        incomplete = [(j.path.name, len(m)) for j in journals if (m := missing_batches(j))]
        if incomplete:
            detail = ", ".join(f"{name} ({n} batches to go)" for name, n in incomplete[:4])
            raise CacheError(f"{cache.name}: cannot merge while parts are incomplete: {detail}. Re-run those shards; they resume.")
        _write(cache, journals, extra_attrs or {})
        for journal in journals:
            journal.path.unlink(missing_ok=True)
        if shards > 1:  # an unsharded run's one part is no news: the caller prints the file
            log.info(f"merged {shards} part(s) into {cache}")
    return cache


def _write(cache: Path, journals: list[Journal], extra_attrs: Mapping[str, object]) -> None:
    header = journals[0].header
    layout = journals[0].layout
    assert layout is not None
    offsets: dict[tuple[str, int], tuple[Journal, int]] = {}
    skipped: dict[str, dict[int, str]] = {split: {} for split in layout.ids}
    for journal in journals:
        for batch, offset in journal.batches_with_offsets():
            offsets[(batch.split, batch.start)] = (journal, offset)
            skipped[batch.split].update({batch.start + k: v for k, v in batch.skipped.items()})
    sizes = {s: len(ids) for s, ids in layout.ids.items()}

    def in_order() -> Iterator[Batch]:
        for split, start, _ in plan_batches(sizes, int(header["batch_size"])):  # type: ignore[call-overload]
            journal, offset = offsets[(split, start)]
            yield journal.batch_at(offset)

    layouts = {s: SplitLayout(layout.ids[s], layout.labels[s], layout.metadata.get(s, {})) for s in layout.ids}
    write_feature_file(
        cache, {**header["attrs"], **extra_attrs}, layouts, tuple(header["readouts"]), header["dims"],  # type: ignore[arg-type]
        str(header["feature_dtype"]), in_order(), skipped,
    )  # fmt: skip
