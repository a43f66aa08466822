"""Classical yardsticks that need no training loop: PCA reconstruction error, kNN pixel distance of whole
images, and raw-pixel patch kNN (PatchCore's memory bank of normal patches, without pretrained features).

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


def _patches(images: np.ndarray, size: int, stride: int) -> np.ndarray:
    """uint8 N×H×W×C -> float32 N×P×(size·size·C) in [0, 1]: every size×size patch at `stride`."""
    x = images.astype(np.float32) / 255.0
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    n, ph, pw = windows.shape[:3]
    return np.ascontiguousarray(windows).reshape(n, ph * pw, -1)


@dataclass
class PatchKNNBaseline:
    """Score = the largest distance of any test patch to its nearest normal patch (raw pixels).

    The memory bank holds every `patch`×`patch` patch of the normal images at stride `patch`/2, randomly
    thinned to at most `bank` patches; test patches are taken at stride `patch`/4, so a defect between
    two grid positions is still seen whole. Patches of 1/8 of the image side: big enough to hold texture.
    """

    patch_fraction: float = 0.125
    bank: int = 50_000
    seed: int = 0

    def fit(self, images: np.ndarray) -> PatchKNNBaseline:
        self.patch = max(3, int(round(images.shape[1] * self.patch_fraction)))
        bank = _patches(images, self.patch, max(1, self.patch // 2))
        bank = bank.reshape(-1, bank.shape[-1])
        if len(bank) > self.bank:
            bank = bank[np.random.default_rng(self.seed).choice(len(bank), self.bank, replace=False)]
        self._nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(bank)
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 16):
            patches = _patches(images[i:i + 16], self.patch, max(1, self.patch // 4))
            dist, _ = self._nn.kneighbors(patches.reshape(-1, patches.shape[-1]))
            out.append(dist.reshape(len(patches), -1).max(axis=1))
        return np.concatenate(out)


BASELINES = {"pca": PCABaseline, "knn": KNNBaseline, "patchknn": PatchKNNBaseline}
