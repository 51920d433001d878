"""The answer first: which configuration to use on each dataset, and what the test set can and cannot tell.

Per dataset the configuration (model x readout x resolution x probe) with the best **validation** score is the
candidate; the test set only reports its number and tests it. Its significance statements rest on **same-probe**
paired comparisons: the chosen configuration against every other model's validation-chosen configuration with the
same probe, on the same test samples (paired bootstrap), Holm-corrected across the comparisons made on that
dataset. Mixing probes would credit a backbone with its probe's merit, and the validation-chosen configuration of
a model inherits the winner's curse of a small validation set (a drop from validation to test larger than the test
CI half-width is flagged). Configurations with ``flags`` (degenerate probes), a missing test metric or no
predictions file are never recommended, and the sentences say so when that excludes the best on validation.
When every comparison is inconclusive the sentence says the data cannot tell the candidates apart. When the
results hold subgroup rows (``fmprobe probe --subgroups``), a significant gap between the chosen configuration's
subgroups (Holm across attributes, at ``alpha``) is said last (:func:`subgroup_caveat`).

Across datasets, backbones are ranked per dataset (1 = best, validation-chosen configuration per probe and over
all probes) and the ranks averaged; with >= 3 datasets a Friedman test and Holm-corrected pairwise Wilcoxon tests
(:mod:`fmprobe.metrics.stats`) say which differences the datasets support — with few datasets, very few.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd

from fmprobe._io import accepts_renamed
from fmprobe.errors import ResultsError
from fmprobe.metrics import N_BOOTSTRAP, get_metric, stats
from fmprobe.report.analysis import (
    CONFIG,
    Choice,
    DatasetView,
    choose_on_val,
    dataset_views,
    higher_is_better,
    paired_gain,
    pick_baseline,
)
from fmprobe.report.cost import CostKey, FeatureCost, choose_measure, feature_costs
from fmprobe.report.doc import MISSING, Block, Cell, Heading, Para, Table, to_text
from fmprobe.report.options import ALPHA, REPORT_RENAMED
from fmprobe.report.subgroups import AttributeSummary, summaries
from fmprobe.results import disqualifying, read_results, to_frame, validate

Results = pd.DataFrame | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


class Verdict(StrEnum):
    """How another configuration compares with the chosen one on test (Holm-corrected, at ``alpha``)."""

    worse = "significantly worse"
    tied = "not significantly different"
    better = "significantly better on test"
    not_compared = "not compared"


@dataclass(frozen=True)
class Config:
    """A configuration with its validation score (mean over repeats) and test value [CI] (first repeat)."""

    model: str
    readout: str
    resolution: int
    probe: str
    val_score: float
    value: float
    ci_low: float
    ci_high: float
    n_val: int
    repeat: int
    cell_id: str = ""  # the cell of the shown repeat (its subgroup rows share it)

    @classmethod
    def of(cls, c: Choice) -> Config:
        r = c.first
        n_val = int(r["n_val"]) if "n_val" in r.index else -1
        return cls(c.model, c.readout, c.resolution, c.probe, c.val_score, float(r["value"]), float(r["ci_low"]),
                   float(r["ci_high"]), n_val, int(r["repeat"]), str(r["cell_id"]))  # fmt: skip

    def label(self, full: bool = False) -> str:
        """``model (readout, 224 px) + probe`` (full) or ``model + probe``."""
        return (
            f"{self.model} ({self.readout}, {self.resolution} px) + {self.probe}"
            if full
            else f"{self.model} + {self.probe}"
        )


@dataclass(frozen=True)
class Comparison:
    """The chosen configuration against ``other`` on the same test samples: ``diff`` = chosen - other."""

    other: Config
    diff: float = math.nan
    rel: float = math.nan  # (chosen - other) / other, with its paired-bootstrap CI
    rel_low: float = math.nan
    rel_high: float = math.nan
    p_value: float = math.nan  # two-sided paired-bootstrap p-value
    p_holm: float = math.nan  # Holm-adjusted over this dataset's comparisons
    verdict: Verdict = Verdict.not_compared
    reason: str = ""  # why not compared (empty when compared)
    seeds: tuple[Comparison, ...] = ()  # a random control run with several seeds: one comparison per seed

    @property
    def spread(self) -> tuple[float, float] | None:
        """(lowest, highest) test value over the control's seeds; None for a single configuration."""
        values = [s.other.value for s in self.seeds if math.isfinite(s.other.value)]
        return (min(values), max(values)) if len(self.seeds) > 1 and values else None

    def label(self, full: bool = False) -> str:
        """The other configuration's label; a control with seeds says how many and their test range."""
        spread = self.spread
        extra = f" [{len(self.seeds)} seeds, test {spread[0]:.3f}–{spread[1]:.3f}]" if spread else ""
        return self.other.label(full) + extra


@dataclass(frozen=True)
class Excluded:
    label: str
    val_score: float
    reason: str


@dataclass
class DatasetAnswer:
    """The recommendation for one dataset, and the sentence that states it."""

    dataset: str
    task: str
    metric: str
    baseline: str
    chosen: Config | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # best-by-validation excluded, winner's curse
    sentence: str = ""
    cheapest: Config | None = None  # the cheapest configuration statistically tied with the chosen one
    cheapest_sentence: str = ""
    subgroup_gaps: list[AttributeSummary] = field(default_factory=list)  # the chosen cell's significant gaps
    subgroup_caveat: str = ""  # the sentence saying them ('' when none)

    @property
    def distinguishable(self) -> bool:
        """Whether the test set separates the chosen configuration from at least one same-probe competitor."""
        return any(c.verdict is Verdict.worse for c in self.comparisons)

    @property
    def baseline_comparison(self) -> Comparison | None:
        return next((c for c in self.comparisons if c.other.model == self.baseline), None)


@dataclass(frozen=True)
class Ranking:
    """Mean rank per backbone across datasets (1 = best) for one probe ('' = each backbone's best probe)."""

    probe: str
    mean_rank: dict[str, float]
    n_datasets: dict[str, int]
    n_total: int  # datasets with at least two backbones ranked
    friedman_p: float = math.nan
    pairwise: pd.DataFrame | None = None  # a, b, statistic, p_value, p_holm
    cliques: list[tuple[str, ...]] = field(default_factory=list)
    sentence: str = ""


@dataclass
class Recommendation:
    """What to use, per dataset and across datasets, as data (:meth:`to_frame`) and as sentences.

    Returned by :func:`recommend`; the report's recommendation section and ``fmprobe leaderboard`` render it.

    Attributes
    ----------
    alpha : float
        The significance level of the Holm-corrected comparisons.
    baseline : str
        The model the comparisons name as the baseline.
    baseline_note : str
        The sentence saying how the baseline was picked (given, or chosen automatically and why).
    datasets : list of DatasetAnswer
        Per dataset: the chosen configuration, its comparisons, exclusions, notes and sentence.
    rankings : list of Ranking
        Mean ranks of the backbones across datasets, per probe and over all probes.

    Examples
    --------
    >>> from fmprobe import recommend
    >>> rec = recommend("runs/results")  # doctest: +SKIP
    >>> print(rec.to_text())  # doctest: +SKIP
    >>> rec.to_frame().query("role == 'chosen'")  # doctest: +SKIP
    """

    alpha: float
    baseline: str
    baseline_note: str
    datasets: list[DatasetAnswer]
    rankings: list[Ranking]

    @property
    def sentences(self) -> list[str]:
        return [f"{d.dataset}: {d.sentence}" for d in self.datasets] + [r.sentence for r in self.rankings]

    def to_frame(self) -> pd.DataFrame:
        """One row per configuration looked at: the chosen one, each comparison, each exclusion; and a
        ``subgroup gap`` row per significant gap of the chosen one (value = best − worst group, ``subgroup`` = the
        attribute, ``reason`` = which groups)."""
        return pd.DataFrame([row for d in self.datasets for row in _frame_rows(d)], columns=FRAME_COLUMNS)

    def tables(self) -> list[Table]:
        return [_table(d, self.alpha) for d in self.datasets if d.chosen is not None]

    def blocks(self) -> list[Block]:
        """The report's recommendation section: sentences first, then the comparisons behind them."""
        out: list[Block] = [Heading("Recommendation"), Para(METHOD_NOTE.format(alpha=self.alpha))]
        out += [Para(f"**{d.dataset}**: {d.sentence}") for d in self.datasets]
        out += [Para(r.sentence) for r in self.rankings]
        return out + self.tables()

    def to_text(self) -> str:
        """The terminal answer: a table per dataset, then every sentence."""
        parts = [to_text(t) for t in self.tables()]
        return "\n\n".join(parts + ["\n".join(self.sentences)])


METHOD_NOTE = (
    "Chosen on validation; tested on the test set against every other backbone's validation-chosen configuration "
    "with the same probe (paired bootstrap on the same samples, Holm-corrected across a dataset's comparisons, "
    "alpha = {alpha:g}). Flagged configurations and those with a missing metric are never recommended. A random-init "
    "control run with several seeds is one control with a spread (test values over seeds, min–max): each seed's "
    "validation-chosen configuration is one comparison in the Holm correction, and a claim against the control is "
    "made only when it holds against every seed."
)
FRAME_COLUMNS = ["dataset", "metric", "role", "model", "readout", "resolution", "probe", "val_score", "value",
                 "ci_low", "ci_high", "diff", "rel_gain", "rel_low", "rel_high", "p_value", "p_holm", "verdict",
                 "is_baseline", "reason", "subgroup"]  # fmt: skip


# ------------------------------------------------------------------------------------------------ formatting


def _metric_label(metric: str) -> str:
    try:
        return str(getattr(get_metric(metric), "label", metric))
    except Exception:  # a metric this version does not know: its name
        return metric


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"  # 0.049 never reads 0.05


def _value(metric: str, c: Config) -> str:
    ci = f" [{c.ci_low:.3f}, {c.ci_high:.3f}]" if math.isfinite(c.ci_low) and math.isfinite(c.ci_high) else ""
    return f"{_metric_label(metric)} {c.value:.3f}{ci}"


def _gain(c: Comparison) -> str:
    """'+3.1% [1.2, 5.0]', or the absolute difference when a relative gain is undefined."""
    if math.isfinite(c.rel) and math.isfinite(c.rel_low) and math.isfinite(c.rel_high):
        return f"{100 * c.rel:+.1f}% [{100 * c.rel_low:.1f}, {100 * c.rel_high:.1f}]"
    return f"difference {c.diff:+.3f}"


def _listing(comparisons: list[Comparison]) -> str:
    return ", ".join(f"{c.label()} ({_p(c.p_holm)}, Holm{_seed_note(c)})" for c in comparisons)


def _seed_note(c: Comparison) -> str:
    return f", the largest of its {len(c.seeds)} seeds" if len(c.seeds) > 1 else ""


# ------------------------------------------------------------------------------------------------ per dataset


def _exclusion(rows: pd.DataFrame, metric: str) -> str:
    """Why a configuration (its rows, one per repeat) cannot be recommended; '' when it can."""
    flags = sorted({str(f) for f in rows.get("flags", pd.Series(dtype=str)) if isinstance(f, str) and f})
    if any(disqualifying(f) for f in flags):
        return f"flagged: {'; '.join(flags)}"
    missing = rows[rows["value"].isna()]
    if not missing.empty:
        why = str(missing["missing_reason"].iloc[0]) or "no reason recorded"
        return f"test {metric} missing ({why})"
    if rows["val_score"].isna().all():
        return "no validation score, so it cannot be chosen"
    if (rows["predictions"].astype(str) == "").any():
        return "no predictions file, so it cannot be tested against the others"
    return ""


def _split_eligible(view: DatasetView) -> tuple[pd.DataFrame, list[Excluded], dict[tuple, str]]:
    """(rows that may be recommended, exclusions, reason per excluded configuration key)."""
    rows = _candidate_rows(view)
    keep = np.ones(len(rows), bool)
    excluded, reasons = [], {}
    for key, g in rows.groupby(["model", *CONFIG], sort=True, dropna=False):
        reason = _exclusion(g, view.metric)
        if reason:
            keep &= ~rows.index.isin(g.index)
            reasons[key] = reason
            model, _, _, readout, resolution, probe = key
            label = Config(model, readout, int(resolution), probe, *[math.nan] * 4, -1, -1).label(full=True)
            excluded.append(Excluded(label, float(g["val_score"].mean()), reason))
    return rows[keep], excluded, reasons


def _compare(view: DatasetView, chosen: Choice, eligible: pd.DataFrame, alpha: float, n_bootstrap: int,
             seed: int) -> list[Comparison]:  # fmt: skip
    """Chosen vs each other model's val-chosen configuration with the same probe, Holm-corrected; the seeds of a
    random control are compared one by one and then folded into one comparison (:func:`_fold_controls`)."""
    same_probe = choose_on_val(eligible[eligible["probe"] == chosen.probe], view.metric)
    raw, controls = [], []
    for model, other in same_probe.items():
        if model == chosen.model:
            continue
        g = paired_gain(view, chosen, other, n_bootstrap, seed)
        raw.append((Config.of(other), g))
        controls.append(_control(other))
    adjusted = stats.holm([g.p_value for _, g in raw])
    sign = 1.0 if higher_is_better(view.metric) else -1.0
    out = []
    for (cfg, g), p_holm in zip(raw, adjusted, strict=True):
        if not math.isfinite(g.p_value):
            out.append(Comparison(cfg, reason=g.reason or "no paired comparison"))
            continue
        verdict = Verdict.tied if p_holm >= alpha else Verdict.worse if sign * g.diff > 0 else Verdict.better
        out.append(Comparison(cfg, g.diff, g.rel, g.rel_low, g.rel_high, g.p_value, float(p_holm), verdict))
    return _fold_controls(out, controls, _control(chosen))


def _control(c: Choice) -> str:
    """The random control a configuration is one seed of (``NAME:random``, its seed-0 name); '' for any other.
    Its rows say ``weights="random"`` (seed 0) or ``"random:SEED"``, as :func:`fmprobe.backbones.parse_backbone`
    writes them."""
    return f"{c.backbone}:random" if c.weights.partition(":")[0] == "random" else ""


def _fold_controls(comparisons: list[Comparison], controls: list[str], chosen_control: str) -> list[Comparison]:
    """One comparison per random control run with several seeds, in the place of its first seed.

    Redrawing a random initialisation moves its score by more than many claimed differences, so a claim against
    the control stands only if it holds against every seed: the verdict is a seed's verdict when all seeds agree,
    else "not significantly different"; p is the largest Holm-adjusted p over the seeds, the difference that seed's."""
    members: dict[str, list[Comparison]] = {}
    for c, control in zip(comparisons, controls, strict=True):
        if control and control != chosen_control:
            members.setdefault(control, []).append(c)
    out = []
    for c, control in zip(comparisons, controls, strict=True):
        group = members.get(control, [])
        if len(group) < 2:
            out.append(c)
        elif c is group[0]:
            out.append(_folded(control, group))
    return out


def _folded(control: str, seeds: list[Comparison]) -> Comparison:
    compared = [c for c in seeds if c.verdict is not Verdict.not_compared]
    if not compared:
        return dataclasses.replace(seeds[0], other=dataclasses.replace(seeds[0].other, model=control),
                                   seeds=tuple(seeds))  # fmt: skip
    weakest = max(compared, key=lambda c: c.p_holm)
    verdicts = {c.verdict for c in seeds}
    verdict = verdicts.pop() if len(verdicts) == 1 else Verdict.tied
    return dataclasses.replace(weakest, other=dataclasses.replace(weakest.other, model=control), verdict=verdict,
                               seeds=tuple(seeds))  # fmt: skip


def _winners_curse(metric: str, c: Config) -> str:
    if not (math.isfinite(c.ci_low) and math.isfinite(c.ci_high) and math.isfinite(c.val_score)):
        return ""
    drop = (c.val_score - c.value) * (1.0 if higher_is_better(metric) else -1.0)
    half = (c.ci_high - c.ci_low) / 2
    if drop <= half:
        return ""
    n_val = f" (n_val = {c.n_val})" if c.n_val > 0 else ""
    return (f"Caution: its validation score {c.val_score:.3f}{n_val} is {drop:.3f} better than its test score, more "
            f"than the test CI half-width {half:.3f}: part of its lead on validation may be luck (winner's curse).")  # fmt: skip


def answer_dataset(view: DatasetView, baseline: str, alpha: float, n_bootstrap: int, seed: int,
                   imagenet: bool = True, costs: dict[CostKey, FeatureCost] | None = None,
                   subgroups: pd.DataFrame | None = None) -> DatasetAnswer:  # fmt: skip
    """The recommendation for one dataset (see the module docstring for the rules); ``subgroups``: the results'
    rows, whose subgroup summaries of the chosen cell give the caveat (:func:`subgroup_caveat`)."""
    ans = DatasetAnswer(view.name, view.task, view.metric, baseline)
    eligible, ans.excluded, reasons = _split_eligible(view)
    best_any = choose_on_val(eligible, view.metric, by=None).get("")
    overall = choose_on_val(_candidate_rows(view), view.metric, by=None).get("")
    if overall is not None and (key := _key(overall)) in reasons:
        ans.notes.append(f"The best validation score ({overall.model} ({overall.readout}, {overall.resolution} px) + "
                         f"{overall.probe}, val {overall.val_score:.3f}) is not recommended: {reasons[key]}.")  # fmt: skip
    if best_any is None:
        why = "; ".join(f"{e.label}: {e.reason}" for e in ans.excluded) or "no configuration has a validation score"
        ans.sentence = f"No configuration can be recommended ({why})."
        return ans
    ans.chosen = Config.of(best_any)
    ans.comparisons = _compare(view, best_any, eligible, alpha, n_bootstrap, seed)
    if curse := _winners_curse(view.metric, ans.chosen):
        ans.notes.append(curse)
    if warnings := sorted({str(f) for f in best_any.rows.get("flags", pd.Series(dtype=str)) if isinstance(f, str) and f}):
        ans.notes.append(f"Note on the chosen configuration: {'; '.join(warnings)}.")
    ans.cheapest, ans.cheapest_sentence = _cheapest_tied(ans, costs or {})
    if subgroups is not None:
        found = summaries(subgroups, ans.chosen.cell_id, view.metric).values()
        ans.subgroup_gaps = sorted((g for g in found if g.significant(alpha)), key=lambda g: g.p_holm)
        ans.subgroup_caveat = subgroup_caveat(view.metric, ans.subgroup_gaps)
    parts = (_sentence(ans, imagenet), ans.cheapest_sentence, ans.subgroup_caveat)
    ans.sentence = " ".join(s for s in parts if s)
    return ans


def subgroup_caveat(metric: str, gaps: Sequence[AttributeSummary]) -> str:
    """"But roc_auc is 0.070 [0.030, 0.110] lower for age_band=≥80 than for age_band=<40 (Holm p = 0.003)." for
    the significant gaps between the chosen configuration's subgroups ('' when there are none)."""
    if not gaps:
        return ""
    word = "lower" if higher_is_better(metric) else "higher"
    parts = []
    for g in gaps:
        size, low, high = (g.gap, g.gap_low, g.gap_high) if g.gap >= 0 else (-g.gap, -g.gap_high, -g.gap_low)
        ci = f" [{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else ""
        worst = g.worst_group or f"the worst {g.attribute} group"
        best = g.best_group or f"the best {g.attribute} group"
        parts.append(f"{size:.3f}{ci} {word} for {worst} than for {best} (Holm {_p(g.p_holm)})")
    return f"But {_metric_label(metric)} is " + ", and ".join(parts) + "."


def _cheapest_tied(ans: DatasetAnswer, costs: dict[CostKey, FeatureCost]) -> tuple[Config | None, str]:
    """The cheapest of the chosen configuration and those not significantly different from it, and its sentence;
    cost: measured extraction seconds per image where all of them have it, else parameters (it says which)."""
    chosen = ans.chosen
    assert chosen is not None
    tied = [chosen, *[c.other for c in ans.comparisons if c.verdict is Verdict.tied]]
    if len(tied) < 2:
        return None, ""
    cost_of = {id(c): costs.get((ans.dataset, c.model, c.resolution)) for c in tied}
    measure = choose_measure(cost_of.values())
    if measure is None:
        return None, "Cheapest tied configuration: cost not recorded for all of them."
    cheapest = min(tied, key=lambda c: measure.of(cost_of[id(c)]))  # type: ignore[arg-type,return-value]
    value = measure.format(measure.of(cost_of[id(cheapest)]))  # type: ignore[arg-type]
    if cheapest is chosen:
        return cheapest, f"It is also the cheapest of the configurations statistically tied with it ({measure.name}: {value})."
    return cheapest, (f"Cheapest configuration statistically tied with it: {cheapest.label(full=True)} ({measure.name}: "
                      f"{value} against {measure.format(measure.of(cost_of[id(chosen)]))}).")  # type: ignore[arg-type]  # fmt: skip


def _candidate_rows(view: DatasetView) -> pd.DataFrame:
    """The table fraction's rows; fraction cells only when there are any (few-shot cells answer another question)."""
    rows = view.at(view.table_fraction)
    return rows[rows["shots"] == 0] if "shots" in rows.columns and (rows["shots"] == 0).any() else rows


def _key(c: Choice) -> tuple:
    return (c.model, c.backbone, c.weights, c.readout, c.resolution, c.probe)


def _baseline_clause(ans: DatasetAnswer, imagenet: bool) -> str:
    """What the test set says about the chosen configuration against the baseline with the same probe."""
    who = f"the {'ImageNet ' if imagenet else ''}baseline {ans.baseline}"
    chosen = ans.chosen
    assert chosen is not None
    if chosen.model == ans.baseline:
        return f"The chosen model is {who} itself."
    b = ans.baseline_comparison
    if b is None:
        return f"No same-probe comparison with {who}: it has no usable configuration with {chosen.probe} here."
    if b.verdict is Verdict.not_compared:
        return f"No comparison with {who} + {chosen.probe}: {b.reason}."
    stats = f"{_gain(b)}, {_p(b.p_holm)}, Holm"
    if b.verdict is Verdict.worse:
        return f"Significantly better than {who} ({stats})."
    if b.verdict is Verdict.better:
        return f"But {who} + {chosen.probe} scored significantly higher on test ({stats})."
    return f"Not significantly different from {who} ({stats})."


def _sentence(ans: DatasetAnswer, imagenet: bool) -> str:
    c = ans.chosen
    assert c is not None
    others = [x for x in ans.comparisons if x.other.model != ans.baseline]
    tied = [x for x in others if x.verdict is Verdict.tied]
    worse = [x for x in others if x.verdict is Verdict.worse]
    better = [x for x in others if x.verdict is Verdict.better]
    made = [x for x in ans.comparisons if x.verdict is not Verdict.not_compared]
    if not made or any(x.verdict is not Verdict.tied for x in made):  # "no clear winner" only when all are ties
        alone = "" if ans.comparisons else f" (no other backbone ran {c.probe} here, so nothing is compared with it)"
        parts = [f"Use {c.label(full=True)}: {_value(ans.metric, c)}{alone}."]
        parts += [f"Not significantly different: {_listing(tied)}."] if tied else []
    else:
        parts = [f"No clear winner: {c.label(full=True)} is best on validation ({_value(ans.metric, c)} on test), "
                 f"but the test set cannot tell it apart from the other {c.probe} configurations"
                 + (f": {_listing(tied)}." if tied else ".")]  # fmt: skip
    parts += [f"Significantly worse: {_listing(worse)}."] if worse else []
    if better:
        parts.append(f"Caution: {_listing(better)} scored significantly higher on test than validation's choice.")
    skipped = [f"{x.other.label()} ({x.reason})" for x in others if x.verdict is Verdict.not_compared]
    if skipped:
        parts.append(f"Not compared: {', '.join(skipped)}.")
    parts.append(_baseline_clause(ans, imagenet))
    return " ".join(parts + ans.notes)


# ------------------------------------------------------------------------------------------------ across datasets


def _scores_table(views: list[DatasetView], probe: str | None) -> pd.DataFrame:
    """Datasets x models: test value of each model's validation-chosen eligible configuration (mean over repeats),
    negated for lower-is-better metrics so that higher is better in every row."""
    table: dict[str, dict[str, float]] = {}
    for v in views:
        eligible, _, _ = _split_eligible(v)
        if probe is not None:
            eligible = eligible[eligible["probe"] == probe]
        sign = 1.0 if higher_is_better(v.metric) else -1.0
        table[v.name] = {m: sign * float(c.rows["value"].mean()) for m, c in choose_on_val(eligible, v.metric).items()}
    return pd.DataFrame.from_dict(table, orient="index")


def rank_backbones(views: list[DatasetView], probe: str | None, alpha: float) -> Ranking | None:
    """Mean ranks across datasets for one probe (None: over all probes); None when fewer than two backbones."""
    scores = _scores_table(views, probe)
    scores = scores[scores.notna().sum(axis=1) >= 2]  # a dataset with one backbone ranks nothing
    if scores.shape[1] < 2 or scores.empty:
        return None
    ranks = stats.mean_ranks(scores)
    counts = scores.notna().sum().to_dict()
    r = Ranking(probe or "", ranks.to_dict(), {m: int(counts[m]) for m in ranks.index}, len(scores))
    full = stats.complete(scores)
    what = f"with {probe}" if probe else "each with its best probe on validation"
    listing = ", ".join(f"{m} {rank:.2f} ({r.n_datasets[m]})" for m, rank in ranks.items())
    n = f"{r.n_total} dataset{'' if r.n_total == 1 else 's'}"
    head = f"Across {n}, backbones {what}: mean rank (1 = best; datasets in brackets) {listing}."
    if full.shape[0] < stats.MIN_DATASETS or full.shape[1] < 2:
        return _with(r, sentence=f"{head} No rank test: it needs at least {stats.MIN_DATASETS} datasets on which every "
                     f"compared backbone ran (here {full.shape[0]}).")  # fmt: skip
    pairwise = stats.pairwise_wilcoxon(full)
    fr = stats.friedman(full).p_value if full.shape[1] >= stats.MIN_METHODS else math.nan
    groups = stats.cliques(stats.mean_ranks(full), pairwise, alpha)
    tests = (
        (f"Friedman {_p(fr)}; " if math.isfinite(fr) else "")
        + "pairwise Wilcoxon (Holm): "
        + ("; ".join(" ~ ".join(g) for g in groups) + " not significantly different" if groups else "all pairs differ")
    )
    note = (f" With {full.shape[0]} datasets these tests have little power: not significant is no evidence that "
            "the backbones are equal.")  # fmt: skip
    return _with(r, friedman_p=fr, pairwise=pairwise, cliques=groups, sentence=f"{head} {tests}.{note}")


def _with(r: Ranking, **changes: object) -> Ranking:
    return dataclasses.replace(r, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ data and tables


def _config_row(d: DatasetAnswer, role: str, c: Config) -> dict[str, object]:
    return {"dataset": d.dataset, "metric": d.metric, "role": role, "model": c.model, "readout": c.readout,
            "resolution": c.resolution, "probe": c.probe, "val_score": c.val_score, "value": c.value,
            "ci_low": c.ci_low, "ci_high": c.ci_high, "is_baseline": c.model == d.baseline,
            "verdict": "chosen on validation" if role == "chosen" else "", "reason": ""}  # fmt: skip


def _frame_rows(d: DatasetAnswer) -> list[dict[str, object]]:
    rows = [] if d.chosen is None else [_config_row(d, "chosen", d.chosen)]
    for c in d.comparisons:
        for role, x in [("compared", c), *[("control seed", s) for s in c.seeds]]:
            rows.append({**_config_row(d, role, x.other), "diff": x.diff, "rel_gain": x.rel, "rel_low": x.rel_low,
                         "rel_high": x.rel_high, "p_value": x.p_value, "p_holm": x.p_holm, "verdict": x.verdict.value,
                         "reason": x.reason})  # fmt: skip
    for e in d.excluded:
        rows.append({"dataset": d.dataset, "metric": d.metric, "role": "excluded", "model": e.label,
                     "val_score": e.val_score, "reason": e.reason})  # fmt: skip
    for g in d.subgroup_gaps:  # the chosen configuration's significant gaps: value = best − worst group
        assert d.chosen is not None
        rows.append({**_config_row(d, "subgroup gap", d.chosen), "value": g.gap, "ci_low": g.gap_low,
                     "ci_high": g.gap_high, "p_holm": g.p_holm, "verdict": "significant gap", "subgroup": g.attribute,
                     "reason": g.detail})  # fmt: skip
    return rows


def _table(d: DatasetAnswer, alpha: float) -> Table:
    c = d.chosen
    assert c is not None

    def row(cfg: Config, diff: str, p: str, verdict: str, x: Comparison | None = None) -> list[Cell]:
        ci = f" [{cfg.ci_low:.3f}, {cfg.ci_high:.3f}]" if math.isfinite(cfg.ci_low) else ""
        name = (x.label(full=True) if x else cfg.label(full=True)) + (" (baseline)" if cfg.model == d.baseline else "")
        return [Cell(name), Cell(f"{cfg.val_score:.3f}"), Cell(f"{cfg.value:.3f}", tail=ci), Cell(diff), Cell(p),
                Cell(verdict)]  # fmt: skip

    body = [row(c, "", "", "chosen on validation")]
    for x in d.comparisons:
        compared = x.verdict is not Verdict.not_compared
        verdict = x.verdict.value + (" (every seed)" if x.seeds and x.verdict is not Verdict.tied else "")
        body.append(row(x.other, f"{-x.diff:+.3f}" if compared else MISSING,
                        f"{x.p_holm:.3f}" if compared else MISSING, verdict if compared else x.reason, x))  # fmt: skip
    body += [[Cell(e.label), Cell(f"{e.val_score:.3f}" if math.isfinite(e.val_score) else MISSING), Cell(MISSING),
              Cell(""), Cell(""), Cell(f"excluded: {e.reason}")] for e in d.excluded]  # fmt: skip
    caption = (f"{d.dataset}: {d.metric} on validation (mean over repeats) and test [95% CI]; Δ = other − chosen on "
               f"the same test samples; p: paired bootstrap, Holm-corrected (alpha = {alpha:g}).")  # fmt: skip
    return Table(["configuration", "val", "test", "Δ test", "p (Holm)", "verdict"], body, caption)


# ------------------------------------------------------------------------------------------------ entry point


def _frame(results: Results) -> pd.DataFrame:
    df = validate(to_frame(results)) if isinstance(results, pd.DataFrame) else read_results(results)
    if df.empty:
        raise ResultsError("the results table is empty; run `fmprobe probe` or a study first.")
    return df


@accepts_renamed(REPORT_RENAMED)
def recommend(
    results: Results,
    *,
    alpha: float = ALPHA,
    baseline: str | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    allow_different_test_sets: bool = False,
) -> Recommendation:
    """Which configuration to use per dataset and how the backbones rank across datasets, as data.

    Chosen on validation, tested on the test set against every other model's validation-chosen configuration with
    the same probe (paired bootstrap, Holm-corrected); see this module's docstring for why.

    Parameters
    ----------
    results : pandas.DataFrame or path or sequence of paths
        A results DataFrame or anything :func:`fmprobe.results.read_results` accepts.
    alpha : float, optional
        The significance level of the Holm-corrected comparisons, strictly between 0 and 1
        (:class:`~fmprobe.report.RecommendOptions`).
    baseline : str or None, optional
        The model to compare against (default: the one the backbone registry flags as an ImageNet baseline).
    n_bootstrap, seed : int, optional
        The paired bootstrap's resamples and seed.
    allow_different_test_sets : bool, optional
        As for the report (:func:`fmprobe.report.analysis.dataset_views`).

    Returns
    -------
    Recommendation
        Per-dataset answers and cross-dataset rankings; ``to_text()``, ``to_frame()`` and ``sentences`` render it.

    Raises
    ------
    fmprobe.metrics.stats.StatsInputError
        ``alpha`` outside (0, 1).
    fmprobe.errors.ResultsError
        The results cannot be read or break the schema, or ``baseline`` is not a model in them.

    Examples
    --------
    >>> from fmprobe import recommend
    >>> rec = recommend("runs/results", alpha=0.05)  # doctest: +SKIP
    >>> rec.sentences[0]  # doctest: +SKIP
    """
    if not 0 < alpha < 1:
        raise stats.StatsInputError(f"alpha must lie strictly between 0 and 1, got {alpha}; the usual choice is 0.05.")
    df = _frame(results)
    views = dataset_views(df, allow_different_test_sets)
    models = sorted({m for v in views for m in v.rows["model"].unique()})
    registered = {m for v in views for m in v.rows.loc[v.rows["imagenet_baseline"], "model"]}
    base, note = pick_baseline(models, baseline, registered)
    imagenet = base in registered  # "the ImageNet baseline" only when the registry says so
    costs = feature_costs(pd.concat([v.rows for v in views]))
    answers = [answer_dataset(v, base, alpha, n_bootstrap, seed, imagenet, costs, df) for v in views]
    probes = sorted({p for v in views for p in _candidate_rows(v)["probe"].unique()})
    if len(views) == 1:  # one dataset: its per-probe orders are in its own table; one overall line is enough
        probes = probes[:1] if len(probes) == 1 else []
    rankings = [r for p in [*probes, None] if (r := rank_backbones(views, p, alpha)) is not None]
    if len(probes) == 1:  # the overall ranking repeats the only probe's
        rankings = rankings[:1]
    return Recommendation(alpha, base, note, answers, rankings)
