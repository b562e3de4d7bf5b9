"""The shared frame of every loss: options, target plan, the one dispatch, reduction, state.

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

Losses that are linear in the target (all but tree-Wasserstein) compute, for a
probability row ``p``, ``Σ_c p_c·weight[c]·loss(z, c)`` structurally.

How a loss computes (see :func:`taxosmooth.tree_ops.set_kernels`): an eager
float32/float64 CPU batch runs the loss's fused host kernel (numpy over the
ring layout, the gradient written in the forward: the backward only scales
it); everything else — other devices, ``torch.compile``, ``torch.jit.trace``,
``torch.func`` and the second derivative of a double backward — runs the
loss's pure-torch formulation, differentiable to any order. Both are exact
(log space where probabilities can underflow) and the tests hold them equal.

float16 / bfloat16 logits are computed in float32 and the loss is returned in
float32 (as under autocast, where ``cross_entropy`` also runs in float32). The
per-class tables of a loss keep their dtype when the module is cast
(``.half()``): they only follow device moves.
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from taxosmooth.losses._inputs import (
    FlatBatch,
    check_ignore_index,
    check_label_smoothing,
    check_mode,
    check_reduction,
    flatten,
)
from taxosmooth.taxonomy import Taxonomy
from taxosmooth.tree_ops import TreeTensors, _is_functorch_wrapped, _values_readable, is_symbolic, use_host_kernels

__all__ = ["TreeLossBase", "LossTarget", "check_weight", "no_autocast", "cached"]


def check_weight(weight, num_classes: int, num_targets: int | None = None) -> torch.Tensor | None:
    """``weight`` as a float tensor ``(C,)`` (or ``(N,)``, one per target id), a copy; or ``None``."""
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor):
        try:
            weight = torch.as_tensor(np.asarray(weight, dtype=np.float64) if not isinstance(weight, torch.Tensor)
                                     else weight)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"weight must be a sequence of numbers, got {type(weight).__name__} ({exc})") from None
    if weight.is_complex() or weight.dtype == torch.bool:
        raise TypeError(f"weight must be real numbers, got dtype {weight.dtype}")
    w = weight.detach().clone()
    if not w.is_floating_point():
        w = w.to(torch.get_default_dtype())
    sizes = (num_classes,) if num_targets in (None, num_classes) else (num_classes, num_targets)
    if w.dim() != 1 or w.shape[0] not in sizes:
        want = " or ".join(f"({s},)" for s in sizes)
        what = "one entry per class" + (", or one per target id" if len(sizes) > 1 else "")
        raise ValueError(f"weight must have shape {want} ({what}), got {tuple(w.shape)}")
    bad = ~torch.isfinite(w) | (w < 0)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(f"weight[{k}] = {w[k].item()}; class weights must be finite and >= 0")
    return w


def no_autocast(device_type: str):
    """The loss manages its own precision; autocast would run its matmuls in half precision."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no per-device query
        enabled = torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()
    if enabled:
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


@dataclass
class LossTarget:
    """What a loss's kernels see of a batch's target, the weights and the reduction folded in.

    ``kind == "index"``: ``ids`` (M,) target ids; ``omega`` (M,) (or a float)
    multiplies each row's label term: ``weight[t]·[counted]·(1 - ε)·scale``;
    ``smooth`` (M,) (or a float, or ``None`` without smoothing) multiplies the
    row's uniform term ``Σ_c (weight[c] / C)·loss(z, c)``: ``ε·[counted]·scale``.
    ``kind == "prob"``: ``prob`` (M, C) the smoothed target distribution
    (``(1 - ε) p + ε / C``), ``omega`` the row scale. ``kind == "sparse"`` (the
    host kernels only): a probability target written as a few classes on a
    uniform floor, ``prob = floor + Σ_j values_j onehot(ids_j)``: ``ids`` (M, k)
    class indices, ``omega`` (M, k) their values times their class weight and
    the row scale, ``values`` (M, k) the mass above the floor, ``smooth`` (M,)
    ``C · floor · scale`` (the uniform part, as for label smoothing) or ``None``;
    ``prob`` (before label smoothing ``eps``) and ``row_scale`` give the dense
    form (:meth:`dense`) for the torch formulation. ``class_weight`` (C,) or ``None``.
    ``coarse``: whether an id is an internal node (``None``: unknown).
    """

    kind: str
    omega: Any  # a tensor (M,) or (M, k), or a float
    ids: torch.Tensor | None = None
    smooth: Any = None  # a tensor (M,), a float, or None
    prob: torch.Tensor | None = None
    class_weight: torch.Tensor | None = None
    coarse: bool | None = None
    nothing_counted: bool = False  # every target ignored or of weight 0: a mean is 0/0 = nan, as in cross_entropy
    row_scale: Any = 1.0  # sparse: the dense form's omega
    values: torch.Tensor | None = None  # sparse: (M, k) float64 target mass above the floor
    eps: float = 0.0  # sparse: the label smoothing still to apply to ``prob`` for the dense form

    def columns(self):
        """``(ids, omega)`` per target column: one for class ids, ``k`` for a sparse probability target."""
        if self.kind == "sparse":
            ids = cast(torch.Tensor, self.ids)  # set for "index" and "sparse" targets
            return [(ids[:, j], self.omega[:, j]) for j in range(ids.shape[1])]
        return [(self.ids, self.omega)]

    def dense(self) -> LossTarget:
        """A sparse target as the probability target it stands for (the torch formulation's input)."""
        if self.kind != "sparse":
            return self
        prob = cast(torch.Tensor, self.prob)  # set for "sparse" targets
        p = prob if not self.eps else prob * (1.0 - self.eps) + self.eps / prob.shape[1]
        return LossTarget(kind="prob", omega=self.row_scale, prob=p, class_weight=self.class_weight)

    def host_omega(self) -> np.ndarray | float:
        return _host_factor(self.omega)

    def host_smooth(self):
        return None if self.smooth is None else _host_factor(self.smooth)


def _host_factor(x):
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()
    return float(x)


#: a probability row with at most this many classes above its floor takes the sparse (ring) kernels
SPARSE_CLASSES = 4


def _sparse_rows(p: torch.Tensor, kmax: int, floor: torch.Tensor | None = None):
    """``p = floor + Σ_j values_j onehot(ids_j)`` when every row has at most ``kmax`` classes above its
    minimum: ``(ids (M, k) int64, values (M, k) float64, floor (M,) float64)``, shorter rows padded
    with class 0 and value 0; else ``None``. ``p`` a CPU tensor (the host kernels'), ``floor`` its row
    minima if known.

    Mixup and CutMix rows are two classes (above 0, or above ``ε / C`` with label smoothing). Three
    passes at most (one comparison, a count, the positions), and a dense batch stops after the count.
    """
    M, C = p.shape
    if floor is None:
        floor = p.amin(dim=1)
    pn, fl = p.numpy(), floor.numpy()
    if M == 0:
        return None
    flat = _above_floor(pn, fl, kmax * M)
    if flat is None:
        return None
    rows, cols = np.divmod(flat, C)
    counts = np.bincount(rows, minlength=M)
    k = int(counts.max()) if flat.size else 0
    if k > kmax:
        return None
    k = max(k, 1)
    slot = np.arange(flat.size) - (np.cumsum(counts) - counts)[rows]
    ids = np.zeros((M, k), dtype=np.int64)
    ids[rows, slot] = cols
    fl64 = fl.astype(np.float64)
    values = np.zeros((M, k))
    values[rows, slot] = pn.reshape(-1)[flat].astype(np.float64) - fl64[rows]
    return torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(fl64)


def _above_floor(pn: np.ndarray, fl: np.ndarray, limit: int):
    """Flat positions of the entries above their row's minimum (``None`` when more than ``limit``).

    float32 rows compare as bit patterns two entries at a time (one int64 per pair), half the
    work of a float comparison; above the minimum is the same as not equal to it (a ``-0.0`` on a
    ``0.0`` floor counts as above with value 0: harmless).
    """
    M, C = pn.shape
    same = bool(fl.size) and fl.min() == fl.max()  # one floor for the batch (0, or ε / C): a scalar comparison
    if pn.dtype == np.float32 and pn.flags.c_contiguous and (M * C) % 2 == 0 and (same or C % 2 == 0):
        bits = fl.view(np.uint32).astype(np.uint64)
        pattern = bits | (bits << np.uint64(32))
        pairs = pn.reshape(-1).view(np.uint64)
        differ = pairs != pattern[0] if same else pairs.reshape(M, -1) != pattern[:, None]
        if np.count_nonzero(differ) > limit:
            return None
        pair = np.flatnonzero(differ)
        cand = np.empty(2 * pair.size, dtype=np.int64)
        cand[0::2] = 2 * pair
        cand[1::2] = cand[0::2] + 1
        return cand[pn.reshape(-1)[cand] > fl[cand // C]]
    above = pn > fl[:, None]
    if np.count_nonzero(above) > limit:
        return None
    return np.flatnonzero(above)


class _FusedLoss(torch.autograd.Function):
    """A host kernel that wrote its gradient in the forward; the backward only scales it.

    Under ``create_graph=True`` (a double backward: gradient penalties, MAML,
    Hessian-vector products) the backward instead differentiates the loss's
    torch formulation, so second derivatives are exact rather than missing.
    """

    @staticmethod
    def forward(ctx, z, call):
        loss, grad = call.host(z)
        ctx.save_for_backward(z, grad)
        ctx.call = call
        return loss

    @staticmethod
    def backward(ctx, g):
        z, grad = ctx.saved_tensors
        if torch.is_grad_enabled():
            with torch.enable_grad():
                ref = ctx.call.reference(z)
                (gz,) = torch.autograd.grad(ref, z, g, create_graph=True)
            return gz, None
        if g.dim() == 1:
            return grad * g.unsqueeze(1).to(grad.dtype), None
        if g.device.type == "cpu" and g.item() == 1.0:
            return grad, None
        return grad * g.to(grad.dtype), None


class _Call:
    """One batch of one loss: the host kernel and the torch formulation, sharing the plan."""

    __slots__ = ("loss", "target", "reduce_rows")

    def __init__(self, loss, target: LossTarget, reduce_rows: bool):
        self.loss, self.target, self.reduce_rows = loss, target, reduce_rows

    def _dead(self):
        """Rows that count for nothing (ignored, or of weight 0): their loss is 0 whatever their logits."""
        t = self.target
        if t.kind != "index" or not isinstance(t.omega, torch.Tensor):
            return None
        dead = t.omega == 0
        if t.smooth is not None:
            dead &= (t.smooth == 0) if isinstance(t.smooth, torch.Tensor) else t.smooth == 0
        return dead

    def host(self, z):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # bad logits are reported after
            rows, grad = self.loss._host(z, self.target)
        dead = self._dead()
        if dead is not None and bool(dead.any()):
            rows = np.where(dead.numpy(), 0.0, rows)
            grad = grad.masked_fill(dead.unsqueeze(1), 0.0)
        if self.reduce_rows:
            return torch.scalar_tensor(float(np.sum(rows)), dtype=z.dtype), grad
        return torch.as_tensor(rows, dtype=z.dtype), grad

    def reference(self, z):
        rows = self.loss._reference(z, self.target.dense())
        dead = self._dead()
        if dead is not None:
            rows = torch.where(dead, torch.zeros_like(rows), rows)
        return rows.sum() if self.reduce_rows else rows


class TreeLossBase(nn.Module):
    """Common state and dispatch of the losses.

    Subclasses set ``num_classes`` (and ``tree`` for a taxonomy), and implement

    * ``_host(z, target) -> (rows, grad)``: the fused kernel on ``z`` (M, C)
      float32/float64 CPU logits, class order: per-row losses (M,) already
      multiplied by the target's factors, and their gradient (M, C);
    * ``_reference(z, target) -> rows``: the same rows in differentiable torch.
    """

    num_classes: int
    supports_coarse = True
    #: whether ``_host`` takes ``kind == "sparse"`` targets (else probability rows stay dense)
    sparse_targets = False

    def __init__(self, num_classes: int, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, coarse_labels: bool = False, tree: TreeTensors | None = None,
                 taxonomy: Taxonomy | None = None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.tree = tree
        if not isinstance(coarse_labels, bool):
            raise TypeError(f"coarse_labels must be a bool, got {coarse_labels!r}")
        if coarse_labels and tree is None:
            raise ValueError(f"{type(self).__name__}: coarse labels need a taxonomy (this loss was built from a "
                             "matrix, which knows no internal nodes)")
        self.coarse_labels = coarse_labels
        self.num_targets = tree.num_nodes if (tree is not None and coarse_labels) else self.num_classes
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.register_buffer("weight", check_weight(weight, self.num_classes, self.num_targets))
        self._fingerprint = taxonomy.fingerprint if taxonomy is not None else None
        self._weight_cache: dict = {}

    # ------------------------------------------------------------------ state
    def get_extra_state(self):
        return {"taxonomy": self._fingerprint} if self._fingerprint is not None else {}

    def set_extra_state(self, state) -> None:
        if self._fingerprint is None:
            return
        theirs = (state or {}).get("taxonomy")
        if theirs != self._fingerprint:
            raise RuntimeError(
                f"{type(self).__name__}: this checkpoint was saved by a loss built on another taxonomy "
                f"(fingerprint {theirs!r}, this loss's {self._fingerprint!r}: classes, nodes, parents or edge "
                "weights differ); build the loss on the taxonomy the checkpoint was made with"
            )

    def _apply(self, fn, recurse=True):
        # dtype casts (.half(), .to(torch.bfloat16), .double()) of a model containing the loss must not
        # round the loss's tables: float buffers only follow the device
        tables = {k: b for k, b in self._buffers.items() if b is not None and b.is_floating_point()}
        for k in tables:
            self._buffers[k] = None
        try:
            super()._apply(fn, recurse)
        finally:
            for k, b in tables.items():
                device = fn(b.new_empty(0)).device
                self._buffers[k] = b if device == b.device else b.to(device)
        self._weight_cache = {}
        return self

    def buffer_bytes(self) -> int:
        """Bytes held in buffers (index tensors and per-class tables)."""
        seen, total = set(), 0
        for b in self.buffers():
            if id(b) not in seen:
                seen.add(id(b))
                total += b.numel() * b.element_size()
        return total

    def extra_repr(self) -> str:
        parts = []
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        if self.coarse_labels:
            parts.append("coarse_labels=True")
        return ", ".join(parts)

    # ------------------------------------------------------------------ forward
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._loss(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)

    def _loss(self, input, target, weight, ignore_index, reduction, label_smoothing):
        name = type(self).__name__
        with no_autocast(input.device.type if isinstance(input, torch.Tensor) else "cpu"):
            mode = check_mode(input.device if isinstance(input, torch.Tensor) else torch.device("cpu"))
            target_mode, batched_target = mode, False
            if isinstance(input, torch.Tensor) and not torch.compiler.is_compiling() and _is_functorch_wrapped(input):
                # no checks of the logits or the loss under torch.func transforms; the target is checked unless
                # vmap batches it (grad's wrappers hold values: an unchecked id would index silently)
                if isinstance(target, torch.Tensor) and not _values_readable(target):
                    target_mode, batched_target = "off", mode != "off"  # set_checks("off") means no checks at all
                mode = "off"
            flat = flatten(input, target, num_classes=self.num_classes, num_targets=self.num_targets,
                           ignore_index=ignore_index, name=name, mode=target_mode,
                           num_nodes=None if self.tree is None else self.tree.num_nodes)
            poison: torch.Tensor | None = None
            if batched_target and flat.kind == "index" and flat.ids is not None and flat.ids.numel():
                # vmap: the ids cannot be looked at; one out of range makes the loss NaN, never a silent number
                ids = flat.ids
                poison = (ids < 0) | (ids >= self.num_targets)
                if isinstance(flat.valid, torch.Tensor):
                    poison = poison & flat.valid
                flat.ids = torch.where(poison, torch.zeros_like(ids), ids)
            z = flat.z
            if z.shape[0] == 0:
                empty = z.sum() * 0.0  # keeps the graph; mean of nothing is nan, as in cross_entropy
                if reduction == "none":
                    return z.new_zeros(flat.out_shape)
                return empty / 0.0 if reduction == "mean" else empty
            plan = self._plan(flat, weight, reduction, label_smoothing)
            reduce_rows = reduction != "none"
            if use_host_kernels(z):
                out = _FusedLoss.apply(z, _Call(self, plan, reduce_rows))
            else:
                out = _Call(self, plan, reduce_rows).reference(z)
            if plan.nothing_counted and reduction == "mean":
                out = out + float("nan")
            if poison is not None:
                nan = torch.full((), float("nan"), dtype=out.dtype, device=out.device)
                out = torch.where(poison if reduction == "none" else poison.any(), nan, out)
            if mode == "full":
                finite = math.isfinite(out.item()) if out.dim() == 0 else bool(torch.isfinite(out).all())
                if not finite and not (reduction == "mean" and plan.nothing_counted):
                    self._name_bad_logit(input, z, flat, out, name)
            elif mode == "device":
                torch._assert_async(~torch.isnan(out).any(),
                                    f"{name}: the loss is NaN: a logit is NaN or +inf (or a row is -inf everywhere)")
            if reduction == "none":
                if flat.valid is not None:
                    out = torch.where(flat.valid, out, torch.zeros_like(out))
                return out.reshape(flat.out_shape)
            return out

    def _plan(self, flat: FlatBatch, weight, reduction: str, eps: float) -> LossTarget:
        """Fold class weights, ignored targets, label smoothing and the mean into per-row factors."""
        z = flat.z
        cw = None if weight is None else weight.to(device=z.device, dtype=torch.float64)
        class_w = None
        if cw is not None:
            class_w = cw[: self.num_classes] if cw.shape[0] == self.num_classes else self._class_part(cw)
        if flat.kind == "prob":
            p = cast(torch.Tensor, flat.prob)  # set for "prob" batches
            scale = 1.0 / z.shape[0] if reduction == "mean" else 1.0
            if self.sparse_targets and use_host_kernels(z):
                sparse = _sparse_rows(p, SPARSE_CLASSES, flat.floor)
                if sparse is not None:  # label smoothing scales the values and lifts the floor
                    ids, values, floor = sparse
                    if eps:
                        values, floor = values * (1.0 - eps), floor * (1.0 - eps) + eps / self.num_classes
                    omega = values * scale
                    if class_w is not None:
                        omega = omega * class_w.index_select(0, ids.reshape(-1)).view_as(omega)
                    smooth = floor * (self.num_classes * scale) if bool((floor > 0).any()) else None
                    return LossTarget(kind="sparse", omega=omega, ids=ids, smooth=smooth, prob=p, values=values,
                                      class_weight=class_w, coarse=False, row_scale=scale, eps=eps)
            if eps:
                p = p * (1.0 - eps) + eps / self.num_classes
            return LossTarget(kind="prob", omega=scale, prob=p, class_weight=class_w)
        ids, valid = cast(torch.Tensor, flat.ids), flat.valid  # ids: set for "index" batches
        if cw is None:
            w_rows = None if valid is None else valid.to(torch.float64)
        else:
            w_rows = self._target_weights(cw).index_select(0, ids)
            if valid is not None:
                w_rows = torch.where(valid, w_rows, torch.zeros_like(w_rows))
        nothing = False
        if reduction == "mean":
            denom: Any = float(z.shape[0]) if w_rows is None else w_rows.sum()  # a tensor when w_rows is one
            nothing = (w_rows is not None and denom.device.type == "cpu" and not is_symbolic(denom)
                       and float(denom) == 0.0)
            # nothing counted: the mean is 0/0 = nan (added after the kernel), the gradient 0, as in cross_entropy
            scale = 0.0 if nothing else 1.0 / denom
        else:
            scale = 1.0
        omega = (1.0 - eps) * (scale if w_rows is None else w_rows * scale)
        smooth = None
        if eps:
            counted = 1.0 if valid is None else valid.to(torch.float64)
            smooth = eps * (scale * counted if valid is not None else scale)
            if isinstance(smooth, torch.Tensor) and smooth.dim() == 0:  # the weighted mean's 1 / Σ w: one per row
                smooth = smooth * torch.ones(ids.shape[0], dtype=torch.float64, device=ids.device)
        return LossTarget(kind="index", omega=omega, ids=ids, smooth=smooth, class_weight=class_w, coarse=flat.coarse,
                          nothing_counted=nothing)

    def _target_weights(self, cw: torch.Tensor) -> torch.Tensor:
        """Weight of every target id (N,): a class's own; an internal node the mean of its classes'."""
        if cw.shape[0] == self.num_targets:
            return cw
        if self.num_targets == self.num_classes:
            return cw
        key = (cw.data_ptr(), cw.device, cw._version) if not is_symbolic(cw) else None
        if key is not None and key in self._weight_cache:
            return self._weight_cache[key]
        tree = cast(TreeTensors, self.tree)  # num_targets != num_classes: coarse labels, which need a tree
        sums = tree.subtree_sum(cw.unsqueeze(0))[0]  # node order
        counts = (tree.leaf_hi - tree.leaf_lo).to(cw.dtype)
        mean = (sums / counts).index_select(0, tree.target_node)
        if key is not None:
            self._weight_cache = {key: mean}
        return mean

    def _class_part(self, cw: torch.Tensor) -> torch.Tensor:
        return cw[: self.num_classes]

    def _name_bad_logit(self, input, z, flat: FlatBatch, out, name) -> None:
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

    # ------------------------------------------------------------------ subclasses
    def _host(self, z, target: LossTarget):  # pragma: no cover
        raise TypeError(f"{type(self).__name__} must define _host(z, target)")

    def _reference(self, z, target: LossTarget):  # pragma: no cover
        raise TypeError(f"{type(self).__name__} must define _reference(z, target)")


def as_taxonomy(obj, name: str) -> Taxonomy:
    if not isinstance(obj, Taxonomy):
        raise TypeError(f"{name}: expected a Taxonomy, got {type(obj).__name__}")
    return obj


def cached(factory: Callable, taxonomy, key: tuple, device: torch.device):
    """A module built once per (taxonomy, key, device): the functional twins reuse their tables.

    Keyed on the taxonomy's identity (no O(nodes) hashing); the entries of a
    taxonomy are dropped when it is garbage-collected (a weak reference), and
    only the last :data:`_CACHE_SIZE` modules are kept.
    """
    try:
        hash(key)
    except TypeError:
        return factory().to(device)  # the module validates the options (and names the bad one)
    tid = id(taxonomy)
    k = (tid,) + key + (str(device),)
    mod = _CACHE.get(k)
    if mod is not None and _ALIVE.get(tid) is not None and _ALIVE[tid]() is taxonomy:
        _CACHE.move_to_end(k)
        return mod
    mod = factory().to(device)
    if _ALIVE.get(tid) is None or _ALIVE[tid]() is not taxonomy:
        _forget(tid)
        _ALIVE[tid] = weakref.ref(taxonomy, functools.partial(_released, tid=tid))
    _CACHE[k] = mod
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return mod


def _released(ref, tid: int) -> None:
    # a weakref callback (bound with functools.partial); at interpreter exit the module's globals may
    # already be gone, and then there is nothing left to forget
    try:
        if _ALIVE.get(tid) is ref:
            _forget(tid)
    except Exception:  # noqa: BLE001 - interpreter shutdown
        pass


def _forget(tid: int) -> None:
    for k in [k for k in _CACHE if k[0] == tid]:
        del _CACHE[k]
    _ALIVE.pop(tid, None)


_CACHE_SIZE = 32
_CACHE: OrderedDict = OrderedDict()
_ALIVE: dict = {}
