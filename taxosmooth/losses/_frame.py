"""The frame of every loss: validate and flatten a batch, fold weights, smoothing and the reduction into
per-row factors, let the loss compute its rows, reduce them.

Every loss follows :func:`torch.nn.functional.cross_entropy`:

* ``weight`` ``(C,)``: with integer targets the sample of class ``t`` counts
  ``weight[t]`` and ``mean`` divides by ``Σ weight[t_i]`` over the counted
  samples; with probability targets ``p`` (and with ``label_smoothing``) the
  term of class ``c`` is weighted by ``weight[c]`` and ``mean`` divides by the
  number of samples;
* targets equal to ``ignore_index`` contribute 0 and do not count (integer targets);
* ``reduction`` in ``"mean"``, ``"sum"``, ``"none"`` (``none`` keeps the target's
  shape, ignored positions hold 0);
* ``label_smoothing=ε``: the target becomes ``(1 - ε)·target + ε/C`` before the
  loss's own hierarchy, for integer and probability targets;
* ``coarse_labels=True`` accepts target ids of internal nodes (a coarse label
  ``v``: "the class is somewhere under ``v``"); a class ``weight`` then gives
  ``v`` the mean weight of its classes (or pass ``num_nodes`` weights, one per
  target id).

A loss sees a batch as :class:`RowTarget` and returns one value per row with
the row's factors applied; for the losses that are linear in the target (all
but tree-Wasserstein) that is ``label·ℓ(z, t) + uniform·Σ_c (weight[c]/C)·ℓ(z, c)``
for integer targets and ``Σ_c p_c·weight[c]·ℓ(z, c)`` for probability rows.

float16 / bfloat16 logits are computed in float32 and the loss is returned in
float32 (as under autocast, where ``cross_entropy`` also runs in float32).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from taxosmooth.losses._inputs import FlatBatch, check_mode, flatten
from taxosmooth.tree_ops import is_functorch_wrapped, values_readable

__all__ = ["RowTarget", "run_loss", "no_autocast"]


@dataclass
class RowTarget:
    """A batch's targets as a loss's rows see them (``M`` rows, after flattening).

    ``kind == "ids"``: ``ids`` ``(M,)`` target ids (ignored rows hold 0); ``label`` multiplies the row's
    label term ``ℓ(z, t)`` (``(1 - ε)·weight[t]·[counted]·scale``: a float or ``(M,)`` float64);
    ``uniform`` multiplies its uniform term ``Σ_c (weight[c]/C)·ℓ(z, c)`` (``ε·[counted]·scale``), ``None``
    without smoothing. ``kind == "prob"``: ``prob`` ``(M, C)`` the smoothed target rows in the compute
    dtype, ``scale`` each row's factor (``1/M`` for a mean). ``class_weight`` ``(C,)`` float64 or ``None``;
    ``target_weight`` ``(M,)`` float64: each row's own weight (``weight[t]``, a coarse label's mean weight, 1
    without weights; ``None`` for probability rows).
    """

    kind: str
    ids: torch.Tensor | None = None
    label: Any = 1.0
    uniform: Any = None
    prob: torch.Tensor | None = None
    scale: Any = 1.0
    class_weight: torch.Tensor | None = None
    target_weight: torch.Tensor | None = None
    eps: float = 0.0
    reduce: bool = False  # the rows may be returned summed (a 0-d tensor): the reduction is not "none"
    num_classes: int = 0  # C as a Python int (not a traced size: jit.trace would turn 1 / C into float32)
    floor: torch.Tensor | None = None  # probability rows: their minima (smoothed), when the checks computed them
    # the few-class split's further class columns of the same rows, ``(ids (M,), label)`` each: the loss adds
    # ``label · ℓ(z, ids)`` for each (a loss that shares its softmax over them; see ``run_loss(shared_columns=)``)
    columns: list | None = None


def no_autocast(device_type: str):
    """The loss manages its own precision; autocast would run its matmuls in half precision."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover - torch < 2.4 has no per-device query
        enabled = torch.is_autocast_enabled()
    if enabled:
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def run_loss(rows: Callable[[torch.Tensor, RowTarget], torch.Tensor], input, target, *, name: str,
             num_classes: int, num_targets: int, num_nodes: int | None, weight: torch.Tensor | None,
             ignore_index: int, reduction: str, label_smoothing: float,
             target_weights: Callable[[torch.Tensor], torch.Tensor] | None = None,
             linear_in_target: bool = False, shared_columns: bool = False) -> torch.Tensor:
    """Validate, flatten, compute ``rows(z, RowTarget)`` (the loss's rows with their factors), reduce.

    ``target_weights(class_weight)`` gives the weight of every target id ``(num_targets,)`` when it differs
    from the class weight (coarse labels: a node's mean class weight). ``linear_in_target``: the loss of a
    probability row is ``Σ_c p_c ℓ(z, c)``, so a row of a few classes on a uniform floor (Mixup, CutMix) may
    take the class path once per class (:func:`_few_classes`); ``shared_columns``: the loss takes those classes in
    one call (``RowTarget.columns``), sharing its softmax.
    """
    device = input.device if isinstance(input, torch.Tensor) else torch.device("cpu")
    with no_autocast(device.type):
        mode = check_mode(device)
        target_mode, batched_target = mode, False
        if isinstance(input, torch.Tensor) and is_functorch_wrapped(input):
            # no checks of the logits or the loss under torch.func transforms; the target is checked unless
            # vmap batches it (grad's wrappers hold values: an unchecked id would index silently)
            if isinstance(target, torch.Tensor) and not values_readable(target):
                target_mode, batched_target = "off", mode != "off"
            mode = "off"
        flat = flatten(input, target, num_classes=num_classes, num_targets=num_targets, ignore_index=ignore_index,
                       name=name, mode=target_mode, num_nodes=num_nodes)
        poison = None
        if batched_target and flat.kind == "index" and flat.ids is not None and flat.ids.numel():
            # vmap: the ids cannot be looked at; one out of range makes the loss NaN, never a silent number
            ids = flat.ids
            poison = (ids < 0) | (ids >= num_targets)
            if flat.valid is not None:
                poison = poison & flat.valid
            flat.ids = torch.where(poison, torch.zeros_like(ids), ids)
        z = flat.z
        if z.shape[0] == 0:
            empty = z.sum() * 0.0  # keeps the graph; the mean of nothing is nan, as in cross_entropy
            if reduction == "none":
                return z.new_zeros(flat.out_shape)
            return empty / 0.0 if reduction == "mean" else empty
        plan, nothing = _plan(flat, weight, reduction, label_smoothing, num_classes, target_weights)
        plan.reduce = reduction != "none"
        parts = _few_classes(z, plan) if linear_in_target and plan.kind == "prob" else None
        if parts is None:
            out = rows(z, plan)
        elif shared_columns and len(parts) > 1:
            parts[0].columns = [(part.ids, part.label) for part in parts[1:]]
            out = rows(z, parts[0])
        else:
            out = rows(z, parts[0])
            for part in parts[1:]:  # a part's rows may come summed (reduce): add sums then
                more = rows(z, part)
                out = out.sum() + more.sum() if plan.reduce and (out.dim() or more.dim()) else out + more
        if reduction != "none" and out.dim():
            out = out.sum()
        if nothing:
            out = out + float("nan")
        if poison is not None:
            nan = torch.full((), float("nan"), dtype=out.dtype, device=out.device)
            out = torch.where(poison if reduction == "none" else poison.any(), nan, out)
        if mode == "full":
            finite = math.isfinite(out.item()) if out.dim() == 0 else bool(torch.isfinite(out).all())
            if not finite and not (reduction == "mean" and nothing):
                _name_bad_logit(input, z, flat, out, name)
        elif mode == "device":
            torch._assert_async(~torch.isnan(out).any(),
                                f"{name}: the loss is NaN: a logit is NaN or +inf (or a row is -inf everywhere)")
        if reduction == "none":
            if flat.valid is not None:
                out = torch.where(flat.valid, out, torch.zeros_like(out))
            return out.reshape(flat.out_shape)
        return out


#: a probability row with at most this many classes above its smallest entry takes the class path per class
FEW_CLASSES = 4


def _few_classes(z: torch.Tensor, target: RowTarget) -> list[RowTarget] | None:
    """Probability rows of at most :data:`FEW_CLASSES` classes above a uniform floor ``f`` (Mixup and CutMix
    rows, with or without label smoothing), ``p = f + Σ_j v_j onehot(c_j)``, as class targets: for a loss
    linear in its target, ``Σ_c p_c ℓ(z, c) = Σ_j v_j ℓ(z, c_j) + C f · Σ_c ℓ(z, c) / C`` — the class path
    once per column ``j`` and, where ``f > 0``, the uniform term of label smoothing. The same number as the
    dense rows (an identity, not an approximation), at the class path's cost instead of passes over every node.

    Eager CPU tensors only (finding the classes reads the rows, a host synchronisation elsewhere; compiled and
    transformed calls keep the dense rows), and only with finite logits (a ``-inf`` logit keeps the dense
    rows' ``+inf``). ``None``: take the dense rows.
    """
    p = target.prob
    if p is None or p.requires_grad or z.device.type != "cpu" or p.dim() != 2 or p.shape[0] == 0 \
            or torch.jit.is_tracing() or torch.compiler.is_compiling() or is_functorch_wrapped(z) \
            or is_functorch_wrapped(p) or not values_readable(p) or not values_readable(z):
        return None  # (a target that requires grad: its gradient is the dense rows')
    floor = p.amin(dim=1) if target.floor is None else target.floor
    if not bool((floor >= 0).all()):  # a negative or NaN entry (unchecked rows): the dense rows' number
        return None
    m, c = p.shape
    # the largest entries of each row: at most FEW_CLASSES above the floor, or the dense rows
    top, ids = torch.topk(p, min(FEW_CLASSES + 1, c), dim=1)
    if top.shape[1] > FEW_CLASSES and bool((top[:, FEW_CLASSES] > floor).any()):
        return None
    if not bool(z.detach().amin() > -math.inf):  # a -inf (or NaN) logit: the dense rows' +inf
        return None
    k = max(int((top[:, :FEW_CLASSES] > floor[:, None]).sum(dim=1).max()), 1)
    ids = ids[:, :k]
    values = top[:, :k].to(torch.float64) - floor.to(torch.float64)[:, None]  # 0 on a column at the floor
    scale = target.scale
    w = target.class_weight
    parts = []
    for j in range(k):
        label = values[:, j] * scale
        if w is not None:
            label = label * w.index_select(0, ids[:, j])
        parts.append(RowTarget(kind="ids", ids=ids[:, j], label=label, class_weight=w, reduce=target.reduce,
                               num_classes=target.num_classes))
    if bool((floor != 0).any()):
        parts[0].uniform = floor.to(torch.float64) * (c * scale)
    return parts


def sum_columns(rows: Callable[[RowTarget], torch.Tensor], target: RowTarget) -> torch.Tensor:
    """A loss's rows for a target with further class columns (:attr:`RowTarget.columns`) taken one column at a
    time: the first column with the target's own options, each further one as class ids with its label."""
    first = dataclasses.replace(target, columns=None)
    out = rows(first)
    for ids, label in target.columns or ():
        more = rows(RowTarget(kind="ids", ids=ids, label=label, class_weight=target.class_weight,
                              reduce=target.reduce, num_classes=target.num_classes))
        out = out.sum() + more.sum() if target.reduce and (out.dim() or more.dim()) else out + more
    return out


def _plan(flat: FlatBatch, weight, reduction: str, eps: float, num_classes: int,
          target_weights) -> tuple[RowTarget, bool]:
    """Fold class weights, ignored targets, label smoothing and the mean into per-row factors.

    Returns the rows' target and whether nothing counts in a mean (every target ignored or of weight 0:
    the mean is 0/0 = nan, with a zero gradient, as in cross_entropy).
    """
    z = flat.z
    scale: Any  # a float, or a float64 tensor (weights, tracing)
    cw = None if weight is None else weight.to(device=z.device, dtype=torch.float64)
    class_w = None if cw is None else cw[:num_classes]
    if flat.kind == "prob":
        p = flat.prob
        assert p is not None
        if eps:
            p = p * (1.0 - eps) + eps / num_classes
        scale = 1.0 / z.shape[0] if reduction == "mean" else 1.0
        if reduction == "mean" and torch.jit.is_tracing():  # the traced batch size: a float64 factor, not float32
            scale = torch.ones((), dtype=torch.float64, device=z.device) / z.shape[0]
        floor = flat.floor
        if floor is not None and eps:
            floor = floor * (1.0 - eps) + eps / num_classes  # the same arithmetic as the rows'
        return RowTarget(kind="prob", prob=p, scale=scale, class_weight=class_w, eps=eps,
                         num_classes=int(num_classes), floor=floor), False
    ids, valid = flat.ids, flat.valid
    assert ids is not None
    if cw is None:
        w_rows = None if valid is None else valid.to(torch.float64)
        target_weight = None
    else:
        table = cw if cw.shape[0] != num_classes or target_weights is None else target_weights(cw)
        target_weight = table.index_select(0, ids)
        w_rows = target_weight if valid is None else torch.where(valid, target_weight, torch.zeros_like(target_weight))
    nothing = False
    scale = 1.0
    if reduction == "mean":
        if w_rows is None:
            scale = 1.0 / z.shape[0]
            if torch.jit.is_tracing():
                scale = torch.ones((), dtype=torch.float64, device=z.device) / z.shape[0]
        else:
            denom = w_rows.sum()
            readable = denom.device.type == "cpu" and not torch.compiler.is_compiling() and values_readable(denom) \
                and not torch.jit.is_tracing()
            nothing = readable and float(denom) == 0.0
            # nothing counted: the mean is 0/0 = nan (added after the rows), the gradient 0, as in cross_entropy
            scale = 0.0 if nothing else 1.0 / denom
    label = (1.0 - eps) * (scale if w_rows is None else w_rows * scale)
    uniform = None
    if eps:
        counted = 1.0 if valid is None else valid.to(torch.float64)
        uniform = eps * scale * counted
        if not isinstance(uniform, torch.Tensor):
            uniform = torch.full(ids.shape, float(uniform), dtype=torch.float64, device=ids.device)
        elif uniform.dim() == 0:
            uniform = uniform.expand(ids.shape)
    return RowTarget(kind="ids", ids=ids, label=label, uniform=uniform, class_weight=class_w,
                     target_weight=target_weight, eps=eps, num_classes=int(num_classes)), nothing


def _name_bad_logit(input, z, flat: FlatBatch, out, name) -> None:
    """A non-finite loss in "full" mode: name the first NaN / +inf logit of a counted row."""
    bad = torch.isnan(z) | (z == math.inf)
    if flat.valid is not None:
        bad &= flat.valid.unsqueeze(1)
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        if input.dim() == 1:
            pos: tuple[int, ...] = (col,)
        else:
            rest = np.unravel_index(row, (input.shape[0],) + tuple(input.shape[2:]))
            pos = (int(rest[0]), col) + tuple(int(i) for i in rest[1:])
        value = input[pos].item()
        raise ValueError(f"{name}: input[{', '.join(map(str, pos))}] is {value}; logits must be finite or -inf")
    if bool(torch.isnan(out).any()):
        dead = torch.isneginf(z).all(dim=1)
        if bool(dead.any()):
            raise ValueError(f"{name}: row {int(dead.nonzero()[0, 0])} of the input (flattened) is -inf "
                             "everywhere; softmax is undefined")
        raise ValueError(f"{name}: the loss is nan although every logit is finite or -inf")
    # +inf: target mass on a class whose logit is -inf, a legitimate infinite loss


def fused_factor(factor: Any) -> Any:
    """A row factor as the fused functions take it: a Python float, or a float64 ``(M,)`` tensor."""
    return float(factor) if not isinstance(factor, torch.Tensor) else factor.to(torch.float64)


def scaled(rows: torch.Tensor, factor: Any) -> torch.Tensor:
    """A fused function's rows times their factor (a float or an ``(M,)`` tensor; ``0`` where the factor is: an
    ignored row, ``0 · inf = 0``)."""
    return rows * factor if isinstance(factor, float) else torch.where(factor == 0, 0.0, rows * factor)


def finish(rows: torch.Tensor, factor: Any, reduce: bool, dtype: torch.dtype) -> torch.Tensor:
    """A fused function's output: the rows times their factor (:func:`scaled`), summed when ``reduce``, in the
    logits' dtype."""
    rows = scaled(rows, factor)
    return (rows.sum() if reduce else rows).to(dtype)


def upstream(grad: torch.Tensor, factor: Any, reduce: bool, rows: int) -> torch.Tensor:
    """The incoming gradient of a fused function's output as one float64 number per row, the factor folded in."""
    g = grad.to(torch.float64)
    if reduce:
        g = g.expand(rows)
    return g * factor


def fused(z: torch.Tensor) -> bool:
    """Whether a loss may take its fused path (its gradient written out): not inside ``torch.func`` transforms,
    which differentiate and batch the formula instead."""
    return not is_functorch_wrapped(z)


def as_rows(factor: Any, like: torch.Tensor) -> torch.Tensor:
    """A per-row factor (a float or an ``(M,)`` tensor) as an ``(M,)`` float64 tensor."""
    if isinstance(factor, torch.Tensor):
        return factor.to(torch.float64).expand(like.shape[0])
    return torch.full((like.shape[0],), float(factor), dtype=torch.float64, device=like.device)


def col(x: Any, like: torch.Tensor) -> Any:
    """A per-row factor (a float or an ``(M,)`` tensor) as something that broadcasts over ``(M, K)`` ``like``."""
    if isinstance(x, torch.Tensor):
        return x.to(like.dtype).unsqueeze(1)
    return float(x)


def times(x: Any, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` ``(M,)`` times a per-row factor, ``0 · inf = 0`` (a row that counts for nothing is 0)."""
    if isinstance(x, torch.Tensor):
        f = x.to(rows.dtype)
        return torch.where(f == 0, torch.zeros_like(rows), f * rows)
    if x == 0.0:
        return rows * 0.0
    return rows * float(x)


def mean_denominator(ids: torch.Tensor, valid: torch.Tensor | None, weight: torch.Tensor | None, num_classes: int,
                     target_weights: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """What ``reduction="mean"`` divides the rows' sum by, for integer target ids ``(M,)`` (``valid`` ``(M,)``
    bool or ``None``; ignored ids replaced by an id in range), by :func:`_plan`'s rules: ``Σ weight[t]`` over the
    counted rows (a coarse label's weight by ``target_weights``), their number without weights. A float64 0-d
    tensor, no host read. (Probability rows divide by their number ``M``.)"""
    flat = FlatBatch(z=ids.new_empty((ids.shape[0], 0), dtype=torch.float64), kind="index",
                     out_shape=tuple(ids.shape), ids=ids, valid=valid)
    plan, _ = _plan(flat, weight, "sum", 0.0, num_classes, target_weights)  # label: the rows' weights
    if isinstance(plan.label, torch.Tensor):
        return plan.label.sum()
    return torch.tensor(float(plan.label) * ids.shape[0], dtype=torch.float64, device=ids.device)
