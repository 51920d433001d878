"""A table's extra columns as sample metadata, and the hints about grouping that users' data needs.

Users' CSVs (and Hugging Face ``metadata.csv`` files) carry columns beyond path and label: a patient id, age,
site. Those become ``Split.metadata`` (stored with the features, read by subgroup metrics) under a key of the
form ``fmprobe.tasks.METADATA_KEY`` (``Patient ID`` -> ``patient_id``), never refused and never silently dropped:
the kept columns, and every renaming, are said once. A column (or file names) that looks like it names a
patient, study or lesion while the split is not grouped by it is the commonest leak in medical imaging
benchmarks, so it gets one warning naming the option that groups by it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence

from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP, METADATA_KEY

log = logging.getLogger(__name__)

# Normalised column names that name the unit a split should keep together (``patient_id``, ``PatientID``, ``lesion``).
GROUP_LIKE = re.compile(
    r"(patient|subject|subj|participant|person|individual|lesion|study|case|pat|pt|mrn)_?(id|ids|no|nr|num|number|uid|key|code)?"
)
# File-name tokens that encode a patient or study (``patient12_a.png``, ``P003-left.png``, ``subj_7.jpg``).
GROUP_TOKEN = re.compile(r"(?i)(?:^|[_\-. ])((?:patient|pat|pt|subject|subj|study|case|p)[_\-]?\d+)(?=$|[_\-. ])")
_said: set[str] = set()


def say_once(emit: Callable[[str], None], message: str) -> None:
    """Log ``message`` the first time this process sees it: a dataset loaded by every cell of a study says its
    assumptions once, not once per cell."""
    if message not in _said:
        _said.add(message)
        emit(message)


def metadata_key(column: str) -> str:
    """``column`` in ``METADATA_KEY`` form: lower case, runs of other characters as ``_`` (``Age (years)`` ->
    ``age_years``); a name that starts with a digit (or has no letters) gets a ``col_`` prefix."""
    key = re.sub(r"[^a-z0-9]+", "_", column.strip().lower()).strip("_")
    key = key if re.fullmatch(METADATA_KEY, key) else f"col_{key}".rstrip("_")
    return key


def metadata_columns(
    where: str, header: Sequence[str], rows: Sequence[dict[str, str]], used: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """Every column of ``header`` not in ``used`` as metadata (key -> one value per row; empty cells are ``''``,
    unknown), said once with the renamings. Two columns that normalise to one key, or one that would become the
    reserved ``group`` key without being the group, are refused by name."""
    kept = [c for c in header if c not in used]
    keys = {c: metadata_key(c) for c in kept}
    clash = [c for c in kept if list(keys.values()).count(keys[c]) > 1]
    if clash:
        raise DatasetError(f"{where}: columns {clash} all become metadata {keys[clash[0]]!r}; rename one of them.")
    taken = [c for c in kept if keys[c] == GROUP]
    if taken:
        raise DatasetError(
            f"{where}: column {taken[0]!r} would be read as the group (patient) but the spec groups by another "
            f"column; rename {taken[0]!r}, or drop group= to group by it."
        )
    if kept:
        shown = ", ".join(c if keys[c] == c else f"{c!r} as {keys[c]}" for c in kept)
        say_once(log.info, f"{where}: keeping column(s) {shown} as sample metadata (stored with the features).")
    return {keys[c]: tuple(row[c] for row in rows) for c in kept}


def suggest_group_column(where: str, header: Sequence[str], rows: Sequence[dict[str, str]], used: Sequence[str]) -> None:
    """Warn once when an ungrouped table has a column that looks like a patient/study/lesion id with repeated
    values (an id that never repeats groups nothing, so it is not worth a warning)."""
    found = [c for c in header if c not in used and GROUP_LIKE.fullmatch(metadata_key(c)) and _repeats(rows, c)]
    if found:
        say_once(
            log.warning,
            f"{where}: column {found[0]!r} looks like a patient/study/lesion id with repeated values, but the split "
            f"is not grouped by it, so one {found[0]}'s images can land in train and test. Add ?group={found[0]} to "
            "keep each in one split" + (f" (other candidates: {', '.join(found[1:])})" if found[1:] else "") + ".",
        )


def _repeats(rows: Sequence[dict[str, str]], column: str) -> bool:
    counts = Counter(row[column] for row in rows if row[column])
    return bool(counts) and max(counts.values()) > 1


def suggest_group_pattern(where: str, names: Sequence[str], classes: Sequence[str]) -> None:
    """Warn once when file names (paths below their class folder) look like they encode a patient or study:
    a patient token (``patient12``, ``P003``), images in per-patient sub-folders, or a prefix before ``_``/``-``
    that is shared by several files without being shared by most (``1234_left``, ``1234_right``)."""
    pattern = group_pattern_hint(names, classes)
    if pattern:
        say_once(
            log.warning,
            f"{where}: file names look like they encode a patient or study (e.g. {_examples(names)}), but the split "
            f"is drawn image by image, so one patient's images can land in train and test. Add ?group=REGEX (the "
            f"first capture group, or the whole match, of each file's name is its patient), e.g. ?group={pattern}",
        )


def group_pattern_hint(names: Sequence[str], classes: Sequence[str]) -> str | None:
    """A ``group=`` regex for file names that look grouped (see :func:`suggest_group_pattern`), else None."""
    if sum("/" in n for n in names) >= 2:
        return "^([^/]+)/"
    tokens = [m.group(1) for n in names if (m := GROUP_TOKEN.search(n))]
    if len(tokens) >= 2 and len(set(tokens)) < len(tokens):
        word = re.match(r"[A-Za-z]+", tokens[0])
        return f"({word.group(0) if word else ''}[_-]?\\d+)"
    prefixes = Counter(m.group(1) for n in names if (m := re.match(r"([^_\-.]+)[_-]", n)))
    for cls in classes:
        prefixes.pop(cls, None)
    if len(prefixes) >= 3 and 2 <= max(prefixes.values()) <= len(names) / 2:
        return "^([^_-]+)[_-]"
    return None


def _examples(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names[:2])
