"""What every loss module holds: its options, its tables as buffers, and the taxonomy it was built on."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from taxosmooth._validation import check_ignore_index, check_label_smoothing, check_reduction, check_weight
from taxosmooth.taxonomy import Taxonomy

__all__ = ["TreeLoss", "as_taxonomy", "check_options"]


def as_taxonomy(obj, name: str) -> Taxonomy:
    if not isinstance(obj, Taxonomy):
        raise TypeError(f"{name}: expected a Taxonomy, got {type(obj).__name__}")
    return obj


def check_options(name: str, num_classes: int, num_targets: int, weight, ignore_index, reduction, label_smoothing):
    """The options every loss shares, validated once: ``(weight or None, ignore_index, reduction, label_smoothing)``."""
    return (check_weight(weight, num_classes, num_targets), check_ignore_index(ignore_index),
            check_reduction(reduction), check_label_smoothing(label_smoothing))


class TreeLoss(nn.Module):
    """The state of a loss module: ``weight`` (a buffer), ``ignore_index``, ``reduction``, ``label_smoothing``,
    ``coarse_labels``, and the fingerprint of its taxonomy (in ``state_dict``: a checkpoint of a loss built on
    another taxonomy is refused). Casting the module (``.half()``) leaves its float tables as they are: they
    only follow device moves.
    """

    num_classes: int
    weight: torch.Tensor | None

    def __init__(self, num_classes: int, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, coarse_labels: bool = False, num_nodes: int | None = None,
                 taxonomy: Taxonomy | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(coarse_labels, bool):
            raise TypeError(f"coarse_labels must be a bool, got {coarse_labels!r}")
        if coarse_labels and num_nodes is None:
            raise ValueError(f"{name}: coarse labels need a taxonomy (this loss was built from a matrix, which "
                             "knows no internal nodes)")
        self.num_classes = int(num_classes)
        self.num_nodes = num_nodes
        self.coarse_labels = coarse_labels
        self.num_targets = num_nodes if (coarse_labels and num_nodes is not None) else self.num_classes
        weight, self.ignore_index, self.reduction, self.label_smoothing = check_options(
            name, self.num_classes, self.num_targets, weight, ignore_index, reduction, label_smoothing)
        self.register_buffer("weight", weight)
        self._fingerprint = taxonomy.fingerprint if taxonomy is not None else None
        self.process_group = None
        self.shard_slack = 0.02

    def shard(self, process_group, taxonomy: Taxonomy | None = None, slack: float = 0.02) -> None:
        """Make the loss class-sharded over ``process_group``: ``input`` is then this rank's columns, the classes
        :func:`~taxosmooth.parallel.shard_classes` ``(taxonomy, world, slack)`` gives it (a loss built from a
        matrix: consecutive class ids, ``torch.chunk``'s split when ``slack=0``)."""
        if process_group is None:
            return
        from taxosmooth.parallel.shards import shard_bounds

        if taxonomy is None and self.num_classes < 1:
            raise ValueError(f"{type(self).__name__}: with process_group the number of classes must be known: pass a "
                             "matrix, or weight (one per class)")
        if taxonomy is None:  # a matrix: the classes in their own order, one flat level
            taxonomy = Taxonomy.from_nested({"_all": [f"c{i}" for i in range(self.num_classes)]}, classes="tree")
        compiled = taxonomy.compiled
        shard_bounds(compiled, _world_size(process_group), slack)  # the checks, at construction
        self.process_group, self.shard_slack, self._compiled = process_group, float(slack), compiled
        self._class_position = torch.from_numpy(compiled.class_position.astype(np.int64))
        self._leaf_lo = torch.from_numpy(compiled.leaf_lo.astype(np.int64))
        self._leaf_hi = torch.from_numpy(compiled.leaf_hi.astype(np.int64))
        self._target_node = torch.from_numpy(compiled.target_node.astype(np.int64))

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
        # dtype casts (.half(), .to(torch.bfloat16), .double()) of a model containing the loss must not round
        # the loss's tables: float buffers only follow the device
        tables = {}
        for mod in self.modules():
            for k, b in mod._buffers.items():
                if b is not None and b.is_floating_point():
                    tables[(id(mod), k)] = (mod, b)
                    mod._buffers[k] = None
        try:
            super()._apply(fn, recurse)
        finally:
            for (_, k), (mod, b) in tables.items():
                device = fn(b.new_empty(0)).device
                mod._buffers[k] = b if device == b.device else b.to(device)
        return self

    def buffer_bytes(self) -> int:
        """Bytes held in buffers (index tensors and per-node tables)."""
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


def _world_size(group) -> int:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("process_group: torch.distributed is not initialised (call init_process_group first)")
    return dist.get_world_size(group)


#: the class-sharded form of every loss: :func:`taxosmooth.losses.sharded.sharded_loss`, registered when that module
#: is imported (by this package's ``__init__``; it imports the losses, they do not import it)
_SHARDED: list = []


def register_sharded(fn) -> None:
    _SHARDED[:] = [fn]


def sharded(mod: TreeLoss, input, target):
    """The class-sharded loss of ``mod`` (see :mod:`taxosmooth.losses.sharded`)."""
    return _SHARDED[0](mod, input, target)


def float_table(values: np.ndarray) -> torch.Tensor:
    """A node or class table as a float64 tensor (a copy)."""
    return torch.from_numpy(np.array(values, dtype=np.float64))
