"""Errors a user can act on.

Library code raises a subclass of :class:`FmprobeError`; the CLI turns it into one message and exit code 1.
Every message names the input that failed and what to do about it.
"""

from __future__ import annotations


class FmprobeError(Exception):
    """Base class of every error fmprobe raises on purpose."""


class UnknownNameError(FmprobeError, KeyError):
    """A registry name (backbone, dataset source, probe, metric) that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetError(FmprobeError):
    """A dataset spec, file, manifest or label that cannot be read."""


class ImageError(DatasetError):
    """One image that cannot be decoded or has an unsupported pixel format."""


class WeightsError(FmprobeError):
    """Missing, unsafe or mismatching checkpoint."""


class CacheError(FmprobeError):
    """A feature cache that is stale, corrupt, locked or unwritable."""


class ProbeError(FmprobeError):
    """A probe that cannot be fitted or evaluated on the given features."""


class ResultsError(FmprobeError):
    """A results table that does not follow the schema."""
