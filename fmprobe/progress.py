"""Progress of every long loop (extraction, probing, fine-tuning), written once.

A terminal gets tqdm's live bar; a log that is not a terminal (SLURM, CI, ``make demo | tee``) gets one plain
line every ~10% with the rate and the ETA instead of one giant ``\\r``-joined line; a notebook gets tqdm's widget.
Under torchrun only rank 0 shows progress (the other ranks' bars would interleave with it).
``FMPROBE_PROGRESS=bar`` or ``=lines`` overrides the detection.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

STEPS = 10  # lines per loop in a log: one every 100/STEPS percent
UNSIZED_EVERY_S = 30.0  # a loop of unknown length logs a line this often


def is_main_process() -> bool:
    """Whether this process speaks for the run: not a torchrun worker of rank > 0 (``RANK``, else ``LOCAL_RANK``)."""
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    return rank.strip() in ("", "0")


class LineProgress(tqdm):
    """tqdm for logs: a line per ``1/STEPS`` of the total (``desc: n/total unit (p%), r unit/s, ETA t``), no ``\\r``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._shown = 0  # steps already logged (0: none yet)
        self._logged: tuple[int, object] | None = None  # (n, postfix) of the last line written
        kwargs.setdefault("mininterval", 1.0)
        kwargs["leave"] = False  # close() must not redraw a bar; it logs the last line itself
        super().__init__(*args, **kwargs)

    def _step(self) -> int:
        if self.total:
            return int(STEPS * self.n / self.total)
        return int((time.time() - self.start_t) / UNSIZED_EVERY_S)

    def line(self) -> str:
        """The log line for the current state."""
        done, elapsed = self.n - (self.initial or 0), max(time.time() - self.start_t, 1e-9)
        rate = done / elapsed
        text = f"{self.desc + ': ' if self.desc else ''}{self.n}"
        if self.total:
            eta = self.format_interval((self.total - self.n) / rate) if rate > 0 else "?"
            text += f"/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%), {rate:.1f} {self.unit}/s, ETA {eta}"
        else:
            text += f" {self.unit}, {rate:.1f} {self.unit}/s, {self.format_interval(elapsed)} elapsed"
        postfix = self.format_dict.get("postfix")
        return text + (f", {postfix}" if postfix else "")

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None or self.disable:  # tqdm clearing its bar: nothing to clear in a log
            return False
        if not hasattr(self, "start_t"):  # tqdm's first refresh, from __init__: a resumed loop starts at its step
            self._shown = int(STEPS * self.n / self.total) if self.total else 0
            return True
        step = self._step()
        if step > self._shown:
            self._shown = step
            self._write_line()
        return True

    def _write_line(self) -> None:
        self._logged = (self.n, self.format_dict.get("postfix"))
        self.fp.write(self.line() + "\n")
        self.fp.flush()

    def close(self) -> None:
        """Log where the loop stopped when the last line did not say it (stopped early, or a final postfix such as
        an epoch's validation score)."""
        if not self.disable and self.n > (self.initial or 0) and self._logged != (self.n, self.format_dict.get("postfix")):
            self._write_line()
        super().close()


def progress(iterable: Iterable[Any] | None = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """A progress bar for ``iterable`` (or ``total=``): tqdm's arguments, drawn as the output device suits.

    Always on stderr (stdout holds only results); ``disable`` (``-q``, ``progress=False``) and non-zero torchrun
    ranks draw nothing."""
    kwargs["file"] = kwargs.get("file") or sys.stderr
    disable = disable or not is_main_process()
    mode = os.environ.get("FMPROBE_PROGRESS", "")  # "bar" or "lines" overrides the detection
    if mode == "bar" or (mode != "lines" and _is_terminal(kwargs["file"])):
        return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)
    if mode != "lines" and "ipykernel" in sys.modules:  # a notebook (stderr is no terminal there): tqdm's widget
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm(iterable, disable=disable, **kwargs)
    return LineProgress(iterable, disable=disable, **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


__all__ = ["LineProgress", "is_main_process", "progress"]
