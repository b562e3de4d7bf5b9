"""The validation boundary of labels and of the arguments that losses, heads, metrics and decisions share.

One mistake gets one exception, whichever part of the library sees it first
(the role of scikit-learn's ``utils/validation.py``):

* **Target ids** (labels, predicted node ids): integers, else ``TypeError``;
  the wrong shape, ``ValueError``; an id outside its range, ``IndexError``
  naming the position, the value and the valid range, as indexing a tensor
  and :func:`torch.nn.functional.cross_entropy` do, and as
  :meth:`taxosmooth.Taxonomy.decode` does. An internal node's id given as a
  class label names the node and ``coarse_labels=True``.
* **ignore_index**: an ``int`` (a numpy integer or a one-element integer tensor
  is fine); ``True``, ``1.5`` or ``"3"`` is a ``TypeError``, never coerced.
* **reduction** (``"mean"``, ``"sum"``, ``"none"``), **label_smoothing**
  (a real number in ``[0, 1]``), class **weight** (finite, ``>= 0``, one per
  class), **coarse_labels** (a bool) and **k** (an int in ``1 … C``).

Checks that read tensor values on the host (a synchronisation on a GPU, a
graph break under :func:`torch.compile`) are explicit: while compiling, the
target check becomes an asynchronous device-side assertion with a fixed
message (:func:`torch._assert_async`), so a compiled training step keeps one
graph.

Tensors of floating-point values (scores, logits, probabilities) are checked in
:mod:`taxosmooth._tensor_checks`; user matrices and scalar options of the
constructors in :mod:`taxosmooth._checks`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "REDUCTIONS",
    "check_reduction",
    "check_ignore_index",
    "check_label_smoothing",
    "check_weight",
    "check_coarse",
    "check_k",
    "check_target",
    "check_target_ids",
    "check_node_ids",
    "target_index_error",
]

REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------- arguments
def check_reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def check_ignore_index(ignore_index) -> int:
    """An int (a numpy or 0-dim integer tensor is fine); 1.5, "3" or True are refused, not coerced."""
    if isinstance(ignore_index, torch.Tensor) and ignore_index.numel() == 1 and not ignore_index.is_floating_point() \
            and ignore_index.dtype != torch.bool:
        ignore_index = ignore_index.item()
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r} ({type(ignore_index).__name__})")
    return int(ignore_index)


def check_label_smoothing(label_smoothing) -> float:
    if isinstance(label_smoothing, torch.Tensor) and label_smoothing.numel() == 1:
        label_smoothing = label_smoothing.item()
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    value = float(label_smoothing)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return value


def check_weight(weight, num_classes: int, num_targets: int | None = None) -> torch.Tensor | None:
    """``weight`` as a float tensor ``(C,)`` (or ``(N,)``, one per target id), a copy; or ``None``."""
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor):
        try:
            weight = torch.as_tensor(np.asarray(weight, dtype=np.float64))
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


def check_coarse(coarse_labels) -> bool:
    if not isinstance(coarse_labels, bool):
        raise TypeError(f"coarse_labels must be True or False, got {coarse_labels!r}")
    return coarse_labels


def check_k(k, num_classes: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {k!r}")
    k = int(k)
    if not 1 <= k <= num_classes:
        raise ValueError(f"{name} = {k} is out of range: it must be between 1 and the number of classes ({num_classes})")
    return k


# ---------------------------------------------------------------------- target ids
def target_index_error(name: str, position, value: int, upper: int, *, what: str = "class index",
                       ignore_index: int | None = None, hint: str = "", where: str | None = None) -> IndexError:
    """The error of an id outside ``[0, upper)``: ``"where: name[i] = v is not a <what> in [0, upper) ..."``.

    ``position`` is an int or a tuple (the index of the entry in ``name``).
    """
    pos = ", ".join(str(int(i)) for i in position) if isinstance(position, tuple) else str(int(position))
    ignored = "" if ignore_index is None else f" or ignore_index={ignore_index}"
    prefix = f"{where}: " if where else ""
    return IndexError(f"{prefix}{name}[{pos}] = {value} is not a {what} in [0, {upper}){ignored}{hint}")


def _integer_tensor(x, name: str, what: str, where: str | None = None) -> torch.Tensor:
    prefix = f"{where}: " if where else ""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{prefix}{name} must hold integer {what}, got {type(x).__name__} ({exc})") from None
    if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{prefix}{name} must hold integer {what}, got dtype {x.dtype}")
    return x


def check_target_ids(
    target, n: int, num_classes: int, *, coarse_labels: bool = False, num_nodes: int | None = None,
    ignore_index: int | None = None, target_names: Sequence | None = None, name: str = "target",
    where: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Integer labels ``(n,)`` checked; ``(ids, valid)``: int64 ids, ignored entries replaced by 0, and the
    mask of the counted entries (``None``: every entry counts).

    Class indices ``[0, num_classes)``; with ``coarse_labels=True`` target ids
    ``[0, num_nodes)`` (internal nodes: coarse labels, see
    :meth:`taxosmooth.Taxonomy.encode`). ``ignore_index=None``: nothing is
    ignored. ``target_names`` (:attr:`Taxonomy.target_names`) lets the error
    of an internal node's id name the node. ``where`` prefixes the messages
    (the caller's name).

    Raises
    ------
    TypeError
        ``target`` does not hold integers (or ``coarse_labels=True`` without ``num_nodes``).
    ValueError
        ``target`` is not of shape ``(n,)``.
    IndexError
        An id outside the range (the first one: its position and value).
    """
    prefix = f"{where}: " if where else ""
    t = _integer_tensor(target, name, "target ids" if coarse_labels else "class indices", where)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{prefix}{name} must have shape ({n},) to match the input, got shape {tuple(t.shape)}")
    check_coarse(coarse_labels)
    if coarse_labels and num_nodes is None:
        raise TypeError(f"{prefix}coarse_labels=True needs a Taxonomy (the subtree of each coarse label), "
                        "not a distance matrix")
    t = t.long()
    upper = num_nodes if coarse_labels else num_classes
    assert upper is not None
    valid = None if ignore_index is None else t != ignore_index
    bad = (t < 0) | (t >= upper)
    if valid is not None:
        bad = bad & valid
    what = "target id" if coarse_labels else "class index"
    if torch.compiler.is_compiling():
        # no host read inside a graph: a device-side assertion, raised at the next synchronisation
        torch._assert_async(~bad.any(), f"{prefix}{name} holds an id out of range: expected "
                            f"{'target ids' if coarse_labels else 'class indices'} in [0, {upper})"
                            + ("" if ignore_index is None else f" or ignore_index={ignore_index}"))
    elif bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        v = int(t[i])
        hint = ""
        if not coarse_labels and num_nodes is not None and num_classes <= v < num_nodes:
            node = f"internal node {target_names[v]!r}" if target_names is not None else "an internal node"
            hint = f"; it is the target id of {node}: pass coarse_labels=True for coarse labels"
        raise target_index_error(name, i, v, upper, what=what, ignore_index=ignore_index, hint=hint, where=where)
    if valid is None:
        return t, None
    return torch.where(valid, t, torch.zeros_like(t)), valid


def check_target(
    target, n: int, num_classes: int, name: str = "target", *, coarse_labels: bool = False,
    num_nodes: int | None = None, target_names: Sequence | None = None, where: str | None = None,
) -> torch.Tensor:
    """Integer labels ``(n,)``: class indices in ``[0, C)``, or target ids in ``[0, num_nodes)`` with
    ``coarse_labels=True``, as int64 (:func:`check_target_ids` without ``ignore_index``)."""
    t, _ = check_target_ids(target, n, num_classes, coarse_labels=coarse_labels, num_nodes=num_nodes,
                            target_names=target_names, name=name, where=where)
    return t


def check_node_ids(ids, n: int, num_nodes: int, name: str = "preds", shape: tuple | None = None) -> torch.Tensor:
    """Predicted target ids (any node, e.g. :func:`taxosmooth.decision.predict_node`): integers in ``[0, num_nodes)``."""
    ids = _integer_tensor(ids, name, "target ids")
    want = (n,) if shape is None else shape
    if tuple(ids.shape) != tuple(want):
        raise ValueError(f"{name} must have shape {want}, got shape {tuple(ids.shape)}")
    bad = (ids < 0) | (ids >= num_nodes)
    if bad.any():
        k = tuple(int(i) for i in bad.nonzero()[0])
        raise target_index_error(name, k, int(ids[k]), num_nodes, what="target id")
    return ids.long()
