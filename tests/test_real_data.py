"""Real data, real weights: EfficientNet-Lite0 ImageNet features on the official PneumoniaMNIST file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _helpers import shared_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from fmprobe import extract_features
from fmprobe.store import FeatureFile


def test_real_lite0_features_separate_pneumonia(tmp_path: Path) -> None:
    path = shared_file("pneumoniamnist.npz")
    result = extract_features(
        str(path), "efficientnet_lite0_imagenet", resolution=128, max_images_per_split=300, out=tmp_path,
        num_workers=0, progress=False,
    )  # fmt: skip
    features = FeatureFile(result.path)
    train, test = features.load("train", dtype="float32"), features.load("test", dtype="float32")
    assert len(train.labels) == 300 and set(np.unique(train.labels)) == {0, 1}
    scaler = StandardScaler().fit(train.features)
    model = LogisticRegression(C=0.05, max_iter=2000).fit(scaler.transform(train.features), train.labels)
    auc = roc_auc_score(test.labels, model.predict_proba(scaler.transform(test.features))[:, 1])
    assert auc > 0.85, f"real ImageNet features should separate pneumonia clearly (AUC {auc:.3f})"
