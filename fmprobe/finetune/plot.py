"""Training curves of one run: losses and the validation metric per epoch, the chosen epoch marked."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_training_curves(log: str | Path | Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Write a PNG of a run's training curves: train and validation loss, and the validation metric per epoch with
    the chosen (best) epoch marked, to see at a glance whether a run under- or over-trained.

    Parameters
    ----------
    log : str or Path or sequence of dict
        A run folder, its ``log.json``, or the list of epoch entries (``FinetuneResult.history``): each with
        ``epoch``, ``train_loss``, ``val_loss``, a ``val_<metric>`` and ``best``.
    path : str or Path
        The PNG to write (its folder is created).
    title : str, optional
        A title above both panels.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> from fmprobe import plot_training_curves
    >>> plot_training_curves(result.run_dir, "curves.png", title="linear")  # doctest: +SKIP
    PosixPath('curves.png')
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(log, (str, Path)):
        source = Path(log)
        history = json.loads((source / "log.json" if source.is_dir() else source).read_text())
    else:
        history = list(log)
    path = Path(path)
    epochs = [h["epoch"] for h in history]
    metric = next((k for k in (history[0] if history else {}) if k.startswith("val_") and k != "val_loss"), None)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", ms=3, label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend(frameon=False)
    if metric:
        values = [h[metric] for h in history]
        ax_metric.plot(epochs, values, marker="o", ms=3, color="C2")
        best = [h["epoch"] for h in history if h.get("best")]
        if best:
            chosen = best[-1]
            ax_metric.axvline(chosen, color="grey", ls="--", lw=1)
            late = chosen > (epochs[0] + epochs[-1]) / 2
            ax_metric.annotate(
                f"chosen: epoch {chosen}", (chosen, values[epochs.index(chosen)]), textcoords="offset points",
                xytext=(-6 if late else 6, -14), ha="right" if late else "left", fontsize=8,
            )  # fmt: skip
        ax_metric.set(
            xlabel="epoch", ylabel=metric.removeprefix("val_"), title=f"validation {metric.removeprefix('val_')}"
        )
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
