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

#: the largest inverse temperature tried, in units of the logits' spread (``s·|x| <= 1e300`` stays finite)
_S_MAX = 1e300


def _moments(x: torch.Tensor, finite: torch.Tensor, s: float):
    """NLL(s), its derivative and second derivative in the inverse temperature ``s`` (float64), for logits ``x``
    whose true class is at 0 (``x = (z - z_t) / c``): NLL(s) = mean_n logsumexp(s·x_n)."""
    sx = torch.where(finite, s * x, -math.inf)
    lse = torch.logsumexp(sx, dim=1)
    p = torch.exp(sx - lse[:, None])
    xf = torch.where(finite, x, 0.0)
    mean = (p * xf).sum(1)
    var = (p * (xf - mean[:, None]) ** 2).sum(1)
    return lse.mean().item(), mean.mean().item(), var.mean().item()


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, *, tol: float = 1e-10, max_iter: int = 200) -> float:
    """The temperature ``T`` that minimises the NLL of ``softmax(logits / T)`` on held-out data.

    .. math:: T^\\star = \\arg\\min_{T > 0} \\; -\\frac{1}{N} \\sum_n \\log \\mathrm{softmax}(z_n / T)_{t_n}

    Guo et al., ICML 2017. The NLL is convex in ``s = 1/T``, with derivative
    ``mean_n(E_{p_s}[z_n] − z_{n, t_n})`` and second derivative the mean
    variance of the logits under ``p_s``; the minimum is found by Newton steps
    kept inside a bracket (bisection when a step leaves it), to a relative
    tolerance ``tol`` in ``s``. Computed in float64, on the logits' device.
    Entries of ``-inf`` (masked classes) are allowed and stay excluded.

    **Scale-equivariant.** The fit runs on ``x_n = (z_n − z_{n, t_n}) / c``,
    with ``c = max_{n, j} |z_{nj} − z_{n, t_n}|`` over finite entries (softmax
    ignores the shift, and the scale is undone at the end): so
    ``fit_temperature(a · z) = a · fit_temperature(z)`` for every ``a > 0``, up
    to rounding, whether the logits are of order ``1e-7`` or ``1e7``.

    **When a finite minimum exists.** ``NLL'(s)`` rises from
    ``mean_n(mean_j z_{nj} − z_{n, t_n})`` at ``s → 0`` to
    ``mean_n(max_j z_{nj} − z_{n, t_n})`` as ``s → ∞``; a minimum exists exactly
    when the first is negative (the true classes score above the mean logit) and
    the second positive (some sample's true class is not its top logit).

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
        no sample scores another class above its true class (the NLL falls as
        ``T → 0``); also for a masked (``-inf``) true class, rows whose finite
        logits are all equal, or no samples.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> z = torch.randn(20000, 10, generator=g)                        # calibrated logits
    >>> y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    >>> round(fit_temperature(3.0 * z, y), 1)                          # a model 3 times overconfident
    3.0
    >>> round(fit_temperature(3e-7 * z, y) / 1e-7, 1)                  # the same model, logits 1e7 times smaller
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
    # shift each row by its true logit and divide by the largest gap: the fit is the same at every scale
    gap = torch.where(finite, z - zt[:, None], 0.0)
    scale = gap.abs().amax().item()
    if scale == 0:
        raise ValueError("no temperature minimises the NLL: within every row the finite logits are equal, so "
                         "the NLL is the same at every temperature")
    if not math.isfinite(scale):
        raise ValueError("the logits' differences within a row overflow float64 (a gap above 1.8e308)")
    x = gap / scale
    # the derivative at s -> 0: the mean logit (over finite entries) minus the true one (0 here)
    if (x.sum(1) / finite.sum(1)).mean().item() >= 0:
        raise ValueError(
            "no finite temperature minimises the NLL: the true classes' logits are on average no higher than the "
            "mean logit, so the NLL falls as T grows without bound (are the logits and targets aligned?)"
        )
    # the derivative as s -> inf: the mean of each row's top logit minus the true one; > 0 unless every true class tops its row
    if not (torch.where(finite, x, -math.inf).amax(1) > 0).any():
        raise ValueError(
            "no finite temperature minimises the NLL: it keeps falling as T → 0 (no sample has a class scored above "
            "its true class: the logits separate every sample, up to ties); the logits need no temperature"
        )
    lo, hi = 0.0, 1.0
    while _moments(x, finite, hi)[1] <= 0:  # g < 0, or g = 0 where the probabilities have rounded onto the true classes
        lo, hi = hi, hi * 2
        if hi > _S_MAX:  # a finite minimum exists, but below 1e-300 of the logits' spread
            raise ValueError(f"the temperature that minimises the NLL is below {1 / _S_MAX:g} times the largest "
                             f"logit gap ({scale:g}); it is not representable")
    s = hi if lo == 0 else (lo + hi) / 2
    for _ in range(max_iter):
        _, g, h = _moments(x, finite, s)
        if g == 0:
            break
        if g < 0:
            lo = s
        else:
            hi = s
        if h > 0:
            step = g / h
            if abs(step) <= tol * s:  # Newton has converged: take its last step (it may round onto the bracket)
                s -= step
                break
            if lo < s - step < hi:
                s -= step
                continue
        mid = (lo + hi) / 2  # the step left the bracket, or no curvature: bisect
        if hi - lo <= tol * mid:
            s = mid
            break
        s = mid
    return scale / s


def __dir__() -> list[str]:
    return list(__all__)
