"""The cache key: everything that changes an embedding, hashed; the full record is stored in the file.

Leaving out resolution or preprocessing was the classic stale-cache bug of older tools: here every component is
a required argument, and the file refuses to open under a different fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Bump when the meaning of stored features changes (layout or readout definitions): old files then miss.
SCHEMA_VERSION = 1


def key_of(fingerprint_json: str) -> str:
    """The cache key of a stored fingerprint record: a feature file re-derives it on open, so an edited record
    (or key) never passes as the cache it claims to be."""
    return hashlib.sha256(fingerprint_json.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Fingerprint:
    dataset: str  # dataset name, for humans
    dataset_digest: str  # content: files/arrays, labels, split assignment
    backbone: str
    weights_digest: str  # sha256 of the weights file, or the random-init recipe
    preprocess: dict[str, object]
    resolution: int
    readouts: tuple[str, ...]
    compute_dtype: str  # the dtype actually used (bf16 and fp32 features differ)
    feature_dtype: str  # storage dtype: float16 or float32
    schema_version: int = SCHEMA_VERSION
    image_conversion: str = "pil-rgb8"  # how raw pixels became 8-bit RGB (DICOM windowing would change this)

    def to_json(self) -> str:
        data = asdict(self)
        data["readouts"] = list(self.readouts)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        return key_of(self.to_json())

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        data = json.loads(text)
        data["readouts"] = tuple(data["readouts"])
        return cls(**data)
