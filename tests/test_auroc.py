"""common.auroc: the one AUROC (rank-based, numpy only: it runs on the edge box) equals scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from common.auroc import auroc


def test_auroc_with_ties_and_one_class() -> None:
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auroc(np.array([0, 1, 0, 1]), np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.5)
    assert auroc(np.array([1, 0, 0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(1.0)
    assert auroc(np.array([0, 0]), np.array([1.0, 2.0])) is None
    assert auroc(np.array([1, 1]), np.array([1.0, 2.0])) is None


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 labels for 2 scores"):
        auroc(np.array([0, 1, 1]), np.array([0.5, 0.6]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(-5, 5)), min_size=2, max_size=60))
def test_equals_scikit_learn(pairs: list[tuple[bool, int]]) -> None:
    labels = np.array([p[0] for p in pairs], np.int64)
    scores = np.array([p[1] for p in pairs], np.float64) / 2.0       # few distinct values: many ties
    got = auroc(labels, scores)
    if labels.min() == labels.max():
        assert got is None
    else:
        assert got == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
