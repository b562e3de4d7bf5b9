"""Temperature scaling: recovers a known temperature, is the NLL's minimum (scipy), and refuses degenerate data."""

from __future__ import annotations

import math

import pytest
import scipy.optimize
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from taxosmooth.calibration import fit_temperature


def calibrated(seed: int, n: int, C: int, scale: float = 1.5):
    """Logits z and labels drawn from softmax(z): calibrated at T = 1 by construction."""
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, C, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    return z, y


@pytest.mark.parametrize("T0", [0.25, 0.5, 2.0, 4.0])
def test_recovers_a_known_temperature(T0):
    z, y = calibrated(0, 40000, 8)
    # the model's logits are z / T0: dividing them by T recovers z at T = 1 / T0 ... i.e. fit gives 1/T0
    assert fit_temperature(z / T0, y) == pytest.approx(1 / T0, rel=0.03)
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.03)


@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.3, 1.0, 3.0]), C=st.integers(2, 9))
def test_is_the_nll_minimum_found_by_scipy(seed, scale, C):
    z, y = calibrated(seed, 300, C, scale)
    z = z + 0.5 * F.one_hot(y, C)  # a little signal: a finite minimum exists
    T = fit_temperature(z, y)
    nll = lambda log_t: F.cross_entropy(z / math.exp(log_t), y).item()  # noqa: E731
    ref = scipy.optimize.minimize_scalar(nll, bounds=(-12, 12), method="bounded", options={"xatol": 1e-10})
    assert T == pytest.approx(math.exp(ref.x), rel=1e-5)
    assert nll(math.log(T)) <= ref.fun + 1e-12


def test_masked_classes_stay_masked():
    z, y = calibrated(3, 2000, 5)
    z = z + F.one_hot(y, 5)
    masked = torch.cat([z, torch.full((2000, 2), -math.inf, dtype=torch.float64)], 1)
    assert fit_temperature(masked, y) == pytest.approx(fit_temperature(z, y), rel=1e-9)


def test_refuses_what_no_temperature_fixes():
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    with pytest.raises(ValueError, match="T → 0"):
        fit_temperature(z, torch.tensor([0, 1]))  # every sample separated
    with pytest.raises(ValueError, match="T grows without bound"):
        fit_temperature(z, torch.tensor([1, 0]))  # every sample wrong
    with pytest.raises(ValueError, match=r"logits\[0, 1\] \(the true class of sample 0\) is -inf"):
        fit_temperature(torch.tensor([[0.0, -math.inf, 1.0]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="at least one sample"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(IndexError, match=r"target\[0\] = 3 is not a class index"):
        fit_temperature(torch.zeros(1, 3), torch.tensor([3]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="tol must be"):
        fit_temperature(torch.zeros(2, 2), torch.tensor([0, 1]), tol=0)
