"""Validation, the checkpoint check and small helpers shared by the heads."""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from taxosmooth._validation import check_target_ids
from taxosmooth.taxonomy import Taxonomy

_EXTRA_STATE = "_extra_state"  # torch's key suffix of get_extra_state() in a state_dict


class TaxonomyHead(nn.Module):
    """A head whose parameters are tied to a taxonomy: its ``state_dict`` carries the taxonomy's
    fingerprint, and loading a checkpoint made on another taxonomy is an error.

    A head's rows follow the class order and the node ids, so the parameters of a head
    trained on the same tree with its classes in another order, or on another tree of the
    same size, load without a shape error and then predict other classes. The extra state
    (:meth:`get_extra_state`) holds :attr:`Taxonomy.fingerprint` and, to say what differs,
    the number of classes and nodes and digests of the class names (as a set, and in order).

    :meth:`load_state_dict` raises ``RuntimeError`` before it changes any of the head's own
    parameters when the checkpoint holds entries of the head and

    * its fingerprint differs (the message names both fingerprints and what differs), or
    * it has no fingerprint: a checkpoint saved before heads stored one, or by a head built
      without a taxonomy. Nothing shows that it was made on this taxonomy, and a wrong one
      would predict other classes without a word, so it is refused rather than accepted with
      a warning (which scrolls by in a training log); the message gives the one line that adds
      the fingerprint to a checkpoint known to be right. (The heads were not yet in a
      release when they started storing it.)

    A checkpoint without any entry of the head (``strict=False``, e.g. a backbone's weights)
    is not checked. A head built without a taxonomy (``FixedClassifier``, ``EmbeddingHead``
    on bare class vectors) stores and checks nothing: pass ``taxonomy=`` to have it checked.
    """

    _taxonomy_state: dict | None = None

    def _bind_taxonomy(self, taxonomy: Taxonomy | None) -> None:
        self._taxonomy_state = None if taxonomy is None else taxonomy_state(taxonomy)

    def get_extra_state(self) -> dict:
        return dict(self._taxonomy_state) if self._taxonomy_state is not None else {}

    def set_extra_state(self, state: Any) -> None:
        self._check_checkpoint(state, "state_dict['_extra_state']")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # checked before any parameter of the head is copied
        if self._taxonomy_state is not None and any(k.startswith(prefix) for k in state_dict):
            key = prefix + _EXTRA_STATE
            self._check_checkpoint(state_dict.get(key), f"state_dict[{key!r}]")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _check_checkpoint(self, state: Any, where: str) -> None:
        ours = self._taxonomy_state
        if ours is None:
            return
        name = type(self).__name__
        theirs = state.get("taxonomy") if isinstance(state, Mapping) else None
        if theirs is None:
            raise RuntimeError(
                f"{name}: this checkpoint has no taxonomy fingerprint (it was saved before heads stored one, or by "
                f"a head built without a taxonomy), so nothing shows that it was made on this head's taxonomy "
                f"(fingerprint {ours['taxonomy']!r}); on another one the head would predict other classes. If you "
                f"know it was made on this taxonomy (the same classes in the same order, the same tree), add the "
                f"fingerprint and load again: {where} = head.get_extra_state()"
            )
        if theirs != ours["taxonomy"]:
            raise RuntimeError(
                f"{name}: this checkpoint was saved by a head built on another taxonomy: {_difference(ours, state)} "
                f"(fingerprint {theirs!r}, this head's {ours['taxonomy']!r}). The head's rows follow the class "
                "order and the tree: build it on the taxonomy the checkpoint was made with"
            )


def taxonomy_state(taxonomy: Taxonomy) -> dict:
    """What a head's checkpoint stores of its taxonomy: the fingerprint, and what tells a reader what differs
    (sizes; digests of the class names as a set and in order, and of the edges by name, in any order)."""
    names = [repr(c) for c in taxonomy.classes]
    return {"taxonomy": taxonomy.fingerprint, "num_classes": taxonomy.num_classes, "num_nodes": taxonomy.num_nodes,
            "class_set": _digest(sorted(names)), "class_order": _digest(names),
            "tree": _digest(sorted(repr(edge) for edge in taxonomy.edges()))}


def _digest(items: list[str]) -> str:
    return hashlib.sha256("\n".join(items).encode("utf-8", "backslashreplace")).hexdigest()[:16]


def _difference(ours: dict, theirs: Mapping) -> str:
    """What differs between two taxonomies, from their stored states (a checkpoint may hold the fingerprint only)."""
    if not all(k in theirs for k in ours):
        return "classes, nodes, parents or edge weights differ"
    if theirs["num_classes"] != ours["num_classes"]:
        return f"it has {theirs['num_classes']} classes, this head {ours['num_classes']}"
    if theirs["class_set"] != ours["class_set"]:
        return "its classes have other names"
    reordered = theirs["class_order"] != ours["class_order"]
    if theirs["tree"] != ours["tree"]:
        nodes = theirs["num_nodes"], ours["num_nodes"]
        nodes_differ = "" if nodes[0] == nodes[1] else f" ({nodes[0]} nodes, this head's {nodes[1]})"
        return f"the same classes in another tree{nodes_differ}" + ("; in another order, too" if reordered else "")
    if reordered:
        return "the same tree with its classes in another order"
    return "classes, nodes, parents or edge weights differ"


def check_optional_taxonomy(taxonomy, num_classes: int, head: str) -> Taxonomy | None:
    """``None``, or a :class:`Taxonomy` with ``num_classes`` classes (the rows of the head's class vectors)."""
    if taxonomy is None:
        return None
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"{head}: taxonomy must be a taxosmooth.Taxonomy or None, got {type(taxonomy).__name__}")
    if taxonomy.num_classes != num_classes:
        raise ValueError(f"{head}: the taxonomy has {taxonomy.num_classes} classes but there are {num_classes} "
                         "class vectors; pass the taxonomy they were built from")
    return taxonomy


def check_in_features(in_features, name: str = "in_features") -> int:
    """A positive int (the width of the features the head reads)."""
    if isinstance(in_features, bool) or not isinstance(in_features, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1 (the number of input features), got {in_features!r}")
    if in_features <= 0:
        raise ValueError(f"{name} must be >= 1 (the number of input features), got {in_features}")
    return int(in_features)


def check_taxonomy(taxonomy, head: str) -> Taxonomy:
    """A :class:`Taxonomy` with at least two classes (so at least one internal node that branches)."""
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"{head}: taxonomy must be a taxosmooth.Taxonomy, got {type(taxonomy).__name__}")
    if taxonomy.num_nodes == taxonomy.num_classes:
        raise ValueError(
            f"{head}: the taxonomy has no internal nodes (its {taxonomy.num_nodes} node(s) are all classes); "
            "a head over a hierarchy needs a root above the classes: build it with at least one parent -> child edge"
        )
    if taxonomy.num_classes < 2:
        raise ValueError(
            f"{head}: the taxonomy has {taxonomy.num_classes} class ({taxonomy.classes[0]!r}); "
            "a classifier needs at least 2 classes"
        )
    return taxonomy


def check_class_vectors(vectors, head: str, arg: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A floating ``(C, dim)`` table of class vectors, ``C >= 2``, and its row norms (each finite and > 0)."""
    v = torch.as_tensor(vectors)
    if v.ndim != 2 or not v.is_floating_point() or v.shape[0] < 2:
        raise ValueError(f"{head}: {arg} must be a floating (C, dim) tensor with C >= 2, "
                         f"got shape {tuple(v.shape)} and dtype {v.dtype}")
    norms = v.norm(dim=1)
    bad = (norms == 0) | ~torch.isfinite(norms)
    if bool(bad.any()):
        raise ValueError(f"{head}: {arg}[{int(bad.nonzero()[0, 0])}] is zero or not finite")
    return v, norms


def internal_node_values(values, taxonomy: Taxonomy, name: str, default: float, upper: float | None = None) -> np.ndarray:
    """A float64 value per node (node-id order) from a scalar, a mapping or an array of the internal nodes.

    ``values`` is a number (every internal node), a mapping ``{internal node name: value}``
    (the others keep ``default``), or an array of one value per internal node in
    target-id order (ids ``C … N-1``, as :attr:`Taxonomy.target_names` lists them).
    Leaves get ``default`` (they have no softmax of their own). Values must be
    finite, ``>= 0`` and, with ``upper``, ``<= upper``.
    """
    c = taxonomy.compiled
    n, k = taxonomy.num_nodes, taxonomy.num_classes
    out = np.full(n, float(default), dtype=np.float64)
    internal = c.target_node[k:]  # node ids of the internal nodes, in target-id order
    if isinstance(values, Mapping):
        for key, value in values.items():
            if key not in taxonomy:
                raise ValueError(f"{name}: {key!r} is not a node of this taxonomy")
            v = taxonomy.node_index(key)
            if c.is_leaf[v]:
                raise ValueError(f"{name}: {key!r} is a class (a leaf); only internal nodes have a softmax over children")
            out[v] = _check_value(value, f"{name}[{key!r}]", upper)
        return out
    if isinstance(values, (numbers.Real, np.floating, np.integer)) and not isinstance(values, bool):
        out[internal] = _check_value(values, name, upper)
        return out
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, a mapping {{internal node: value}} or an array of "
                        f"{n - k} values (one per internal node), got {type(values).__name__}") from None
    if arr.shape != (n - k,):
        raise ValueError(f"{name} must hold one value per internal node ({n - k}, in target-id order "
                         f"C ... N-1), got shape {tuple(arr.shape)}")
    for i, value in enumerate(arr):
        _check_value(value, f"{name}[{i}] (node {taxonomy.target_names[k + i]!r})", upper)
    out[internal] = arr
    return out


def _check_value(value, what: str, upper: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"in [0, {upper:g}]" if upper is not None else "finite and >= 0"
        raise ValueError(f"{what} must be {bound}, got {value!r}")
    return value


def check_targets(target, n: int, taxonomy: Taxonomy, coarse_labels: bool, ignore_index: int | None,
                  head: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(safe_target, valid)``: int64 target ids with ignored entries replaced by 0, and the mask (None: all valid).

    Class indices ``[0, C)``; with ``coarse_labels`` any target id ``[0, num_nodes)``.
    ``ignore_index=None``: nothing is ignored. The checks of :mod:`taxosmooth._validation`.
    """
    return check_target_ids(target, n, taxonomy.num_classes, coarse_labels=coarse_labels, num_nodes=taxonomy.num_nodes,
                            ignore_index=ignore_index, target_names=taxonomy.target_names, where=head)


def check_class_targets(target, n: int, num_classes: int, ignore_index: int | None,
                        head: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """As :func:`check_targets`, for class indices ``[0, num_classes)`` without a taxonomy."""
    return check_target_ids(target, n, num_classes, ignore_index=ignore_index, where=head)


def reduce(loss: torch.Tensor, valid: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Mean over the valid samples (``nan`` if there are none, as ``F.cross_entropy``), sum, or per sample."""
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    count = loss.shape[0] if valid is None else valid.sum()
    return loss.sum() / count


def float_for(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32 (no fp16/bf16 overflow)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def index_buffer(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
