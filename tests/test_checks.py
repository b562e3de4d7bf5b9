"""Validation of user matrices at the boundary: real numbers only, never a silent conversion (issue 11 item 8)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

import taxosmooth as ts
from taxosmooth._checks import as_numpy, check_square_matrix


@pytest.mark.parametrize(
    "matrix, match",
    [
        ([[0, 1 + 2j], [1, 0]], "complex"),
        (np.array([[0, 1], [1, 0]], dtype=np.complex128), "complex"),
        (np.array([[0, 1], [1, 0]], dtype=np.complex64), "complex"),
        (torch.zeros(2, 2, dtype=torch.complex64), "complex"),
        ([["0", "1"], ["1", "0"]], "numeric"),
        (np.array([[0, "1"], [1, 0]], dtype=object), "real numbers, got str"),
        (np.array([[0, None], [1, 0]], dtype=object), "real numbers, got NoneType"),
        (np.array([[0, True], [1, 0]], dtype=object), "real numbers, got bool"),
    ],
)
def test_complex_and_text_matrices_are_refused(matrix, match):
    # np.asarray(complex, dtype=float64) would drop the imaginary part with only a warning
    with pytest.raises(TypeError, match=match):
        check_square_matrix(matrix, "cost matrix")


def test_a_complex_cost_matrix_is_refused_by_the_losses():
    cost = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex64)
    with pytest.raises(TypeError, match="complex"):
        ts.ExpectedCostLoss(cost)
    with pytest.raises(TypeError, match="complex"):
        ts.SoftTargetCrossEntropy(torch.eye(2, dtype=torch.complex64))


def test_real_matrices_of_every_kind_are_accepted():
    want = np.array([[0.0, 0.5], [2.0, 0.0]])
    for m in (want.tolist(), want.astype(np.float32), torch.tensor(want), torch.tensor(want, dtype=torch.bfloat16),
              np.array([[0, Fraction(1, 2)], [2, 0]], dtype=object), np.array([[0, 1], [2, 0]], dtype=np.int8) / [1, 2]):
        np.testing.assert_array_equal(check_square_matrix(m), want)
    assert as_numpy([[True, False]]).dtype == np.float64  # a 0/1 matrix of bools is a real 0/1 matrix
