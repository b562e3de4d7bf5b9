"""Temperature scaling: one scalar that makes a classifier's probabilities honest.

CRM (:func:`taxosmooth.decision.crm_predict`), the decisions at any node
(:func:`taxosmooth.decision.predict_node`) and their operating curves weigh
probabilities against each other, so they want calibrated ones; networks
trained with cross entropy are usually overconfident. Guo, Pleiss, Sun and
Weinberger, "On Calibration of Modern Neural Networks" (ICML 2017): divide the
logits by one temperature ``T`` fitted on held-out data by minimising the
negative log-likelihood; the ranking (and so the argmax) is unchanged.
"""

from __future__ import annotations

import math
import numbers

import torch

from taxosmooth._tensor_checks import check_logits
from taxosmooth._validation import check_target

__all__ = ["fit_temperature"]

#: the search range of the inverse temperature 1/T
_S_MIN, _S_MAX = 1e-6, 1e6


def _moments(z: torch.Tensor, finite: torch.Tensor, s: float, zt: torch.Tensor):
    """NLL(s), its derivative and second derivative in the inverse temperature ``s`` (float64)."""
    x = torch.where(finite, s * z, -math.inf)
    lse = torch.logsumexp(x, dim=1)
    p = torch.exp(x - lse[:, None])
    zf = torch.where(finite, z, 0.0)
    mean = (p * zf).sum(1)
    var = (p * (zf - mean[:, None]) ** 2).sum(1)
    return (lse - s * zt).mean().item(), (mean - zt).mean().item(), var.mean().item()


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, *, tol: float = 1e-10, max_iter: int = 200) -> float:
    """The temperature ``T`` that minimises the NLL of ``softmax(logits / T)`` on held-out data.

    .. math:: T^\\star = \\arg\\min_{T > 0} \\; -\\frac{1}{N} \\sum_n \\log \\mathrm{softmax}(z_n / T)_{t_n}

    Guo et al., ICML 2017. The NLL is convex in ``s = 1/T``, with derivative
    ``mean_n(E_{p_s}[z_n] − z_{n, t_n})`` and second derivative the mean
    variance of the logits under ``p_s``; the minimum is found by Newton steps
    kept inside a bracket (bisection when a step leaves it), to a relative
    tolerance ``tol`` in ``s``. Computed in float64, on the logits' device.
    Entries of ``-inf`` (masked classes) are allowed and stay excluded.

    Parameters
    ----------
    logits : Tensor (N, C)
        Held-out logits (not the training set's: those are overfitted).
    target : LongTensor (N,)
        Class indices.
    tol : float, default 1e-10
    max_iter : int, default 200

    Returns
    -------
    float
        ``T``; use ``logits / T``.

    Raises
    ------
    ValueError
        When no finite temperature minimises the NLL: the logits rank the true
        classes no better than uniform guessing (the NLL falls as ``T → ∞``), or
        separate every sample so cleanly that it falls as ``T → 0``; also for a
        masked (``-inf``) true class, or no samples.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> z = torch.randn(20000, 10, generator=g)                        # calibrated logits
    >>> y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    >>> round(fit_temperature(3.0 * z, y), 1)                          # a model 3 times overconfident
    3.0
    """
    z = check_logits(logits, "logits").detach().to(torch.float64)
    if z.shape[0] == 0:
        raise ValueError("fit_temperature needs at least one sample")
    t = check_target(target, z.shape[0], z.shape[1]).to(z.device)
    for name, v in (("tol", tol),):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < 1:
            raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    finite = torch.isfinite(z)
    zt = z.gather(1, t[:, None])[:, 0]
    if not torch.isfinite(zt).all():
        i = int((~torch.isfinite(zt)).nonzero()[0, 0])
        raise ValueError(f"logits[{i}, {int(t[i])}] (the true class of sample {i}) is -inf: its likelihood is 0 at every temperature")
    # the derivative at s -> 0: the mean logit (over finite entries) minus the true one
    mean0 = torch.where(finite, z, 0.0).sum(1) / finite.sum(1)
    if (mean0 - zt).mean().item() >= 0:
        raise ValueError(
            "no finite temperature minimises the NLL: the true classes' logits are on average no higher than the "
            "mean logit, so the NLL falls as T grows without bound (are the logits and targets aligned?)"
        )
    lo, hi = 0.0, 1.0
    while True:
        if _moments(z, finite, hi, zt)[1] > 0:
            break
        lo, hi = hi, hi * 2  # g < 0, or g = 0 where the probabilities have rounded onto the true classes
        if hi > _S_MAX:
            raise ValueError(
                "no finite temperature minimises the NLL: it keeps falling as T → 0 (the logits separate every "
                "sample's true class from the others); the logits need no temperature"
            )
    s = hi if lo == 0 else (lo + hi) / 2
    for _ in range(max_iter):
        _, g, h = _moments(z, finite, s, zt)
        if g == 0:
            break
        if g < 0:
            lo = s
        else:
            hi = s
        step = s - g / h if h > 0 else (lo + hi) / 2
        new = step if lo < step < hi else (lo + hi) / 2
        if abs(new - s) <= tol * max(s, _S_MIN):
            s = new
            break
        s = new
    return 1.0 / s


def __dir__() -> list[str]:
    return list(__all__)
