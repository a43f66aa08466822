"""Classical yardsticks that need no training loop: PCA reconstruction error and kNN pixel distance.

They fit on normal images only and score like the detector: higher = more anomalous.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors


def _flatten(images: np.ndarray) -> np.ndarray:
    """uint8 N×H×W×C -> float32 N×D in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


@dataclass
class PCABaseline:
    """Score = squared reconstruction error after projecting onto the top principal components."""

    n_components: int | float = 0.95  # an int, or the fraction of variance to keep
    seed: int = 0

    def fit(self, images: np.ndarray) -> PCABaseline:
        x = _flatten(images)
        n = self.n_components
        if isinstance(n, int):
            n = min(n, x.shape[0] - 1, x.shape[1])
        self._pca = PCA(n_components=n, random_state=self.seed).fit(x)
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        x = _flatten(images)
        recon = self._pca.inverse_transform(self._pca.transform(x))
        return ((x - recon) ** 2).mean(axis=1)


@dataclass
class KNNBaseline:
    """Score = mean Euclidean distance to the k nearest normal training images in pixel space."""

    k: int = 1

    def fit(self, images: np.ndarray) -> KNNBaseline:
        x = _flatten(images)
        self._nn = NearestNeighbors(n_neighbors=min(self.k, len(x))).fit(x)
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        dist, _ = self._nn.kneighbors(_flatten(images))
        return dist.mean(axis=1)


BASELINES = {"pca": PCABaseline, "knn": KNNBaseline}
