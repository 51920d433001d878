"""The report's options and their defaults, light on purpose (no pandas or matplotlib at import): the CLI reads
them for ``fmprobe report --help`` on every start."""

from __future__ import annotations

from dataclasses import dataclass, fields

from fmprobe._io import accepts_renamed
from fmprobe.metrics import N_BOOTSTRAP

# Keyword names that changed to the CLI's (``--bootstrap``): the old ones still work, with a DeprecationWarning.
REPORT_RENAMED = {"n_resamples": "n_bootstrap"}


@dataclass(frozen=True)
class RecommendOptions:
    """The recommendation's options, light so the CLI reads their defaults without pandas.

    :func:`fmprobe.report.recommend.recommend`'s ``alpha`` defaults to this field's default.

    Attributes
    ----------
    alpha : float
        The significance level (`fmprobe leaderboard --alpha`): a difference counts when its Holm-corrected
        p-value is below it.

    Examples
    --------
    >>> from fmprobe import RecommendOptions
    >>> RecommendOptions().alpha
    0.05
    >>> RecommendOptions.defaults()
    {'alpha': 0.05}
    """

    alpha: float = 0.05

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {f.name: f.default for f in fields(cls)}


ALPHA: float = RecommendOptions.alpha


@accepts_renamed(REPORT_RENAMED)
@dataclass(frozen=True)
class ReportOptions:
    """The report's options, light so ``fmprobe report --help`` shows their defaults without pandas.

    :func:`fmprobe.report.write_report`'s keyword defaults are these fields' defaults (the one copy of them).

    Attributes
    ----------
    n_bootstrap : int
        The paired bootstrap's resamples per comparison (`fmprobe report --bootstrap`).
    seed : int
        The bootstrap's seed (`--seed`).
    allow_different_test_sets : bool
        Whether rows of one dataset scored on different test sets may be compared
        (`--allow-different-test-sets`: on the test ids they share, and the report says so; refused otherwise).
    alpha : float
        The recommendation's significance level (`--alpha`, the recommendation's own default).
    reference : str or None
        A CSV of published numbers shown beside the measured ones, marked as not measured here
        (`--reference FILE`; None: none).

    Examples
    --------
    >>> from fmprobe import ReportOptions
    >>> ReportOptions().seed, ReportOptions().alpha
    (0, 0.05)
    >>> sorted(ReportOptions.defaults())
    ['allow_different_test_sets', 'alpha', 'n_bootstrap', 'reference', 'seed']
    """

    n_bootstrap: int = N_BOOTSTRAP
    seed: int = 0
    allow_different_test_sets: bool = False
    alpha: float = RecommendOptions.alpha
    reference: str | None = None

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """Field name -> default: what ``--help`` shows."""
        return {f.name: f.default for f in fields(cls)}


N_RESAMPLES: int = ReportOptions.n_bootstrap
SEED: int = ReportOptions.seed
ALLOW_DIFFERENT_TEST_SETS: bool = ReportOptions.allow_different_test_sets
