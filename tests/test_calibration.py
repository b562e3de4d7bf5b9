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


def scipy_temperature(z, y, around: float = 1.0) -> float:
    """The NLL's minimum over log T in log(around) ± 12, by scipy's bounded scalar search (the oracle)."""
    nll = lambda log_t: F.cross_entropy(z / math.exp(log_t), y).item()  # noqa: E731
    c = math.log(around)
    ref = scipy.optimize.minimize_scalar(nll, bounds=(c - 12, c + 12), method="bounded", options={"xatol": 1e-10})
    return math.exp(ref.x)


def test_logits_of_tiny_scale():
    """Logits 1e-7 times a model's, optimum T ≈ 9e-8: found (it was refused as 'separating every sample')."""
    z, y = calibrated(0, 4000, 10, scale=1.0)
    tiny = 1e-7 * (0.9 * z)  # a model 0.9 times as confident as it should be, then shrunk
    T = fit_temperature(tiny, y)
    assert 8.5e-8 < T < 9.5e-8
    assert T == pytest.approx(scipy_temperature(tiny, y, around=1e-7), rel=1e-5)
    assert T == pytest.approx(1e-7 * fit_temperature(0.9 * z, y), rel=1e-12)


@given(seed=st.integers(0, 2**31 - 1), C=st.integers(2, 9), mantissa=st.floats(1.0, 10.0),
       exponent=st.integers(-150, 150))
def test_is_scale_equivariant(seed, C, mantissa, exponent):
    """fit_temperature(c · z) = c · fit_temperature(z) for c > 0 over 300 decades, to a few ulps."""
    z, y = calibrated(seed, 300, C)
    z = z + 0.5 * F.one_hot(y, C)
    c = mantissa * 10.0**exponent
    assert fit_temperature(c * z, y) == pytest.approx(c * fit_temperature(z, y), rel=1e-12)


@pytest.mark.parametrize("c", [1e-150, 1e-7, 1.0, 1e7, 1e150])
def test_what_no_temperature_fixes_at_every_scale(c):
    """The refusals do not depend on the scale: separated logits (ties included), wrong ones, flat rows."""
    z = c * torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 3.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="T → 0"):
        fit_temperature(z, torch.tensor([0, 1]))  # the second row ties its true class with class 2
    with pytest.raises(ValueError, match="T grows without bound"):
        fit_temperature(z, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="within every row the finite logits are equal"):
        fit_temperature(torch.full((2, 3), c, dtype=torch.float64), torch.tensor([0, 2]))
    # one sample whose true class is below another by 1e-3 of the spread: a finite minimum, the scipy one
    near = c * torch.tensor([[1.0, 0.0], [0.0, 1e-3], [0.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])
    T = fit_temperature(near, y)
    assert T == pytest.approx(scipy_temperature(near, y, around=c / 10), rel=1e-5)
