"""The tree engine: one formulation of every hierarchy operation, in torch, on any device.

* :mod:`~taxosmooth.tree_ops.segments`: the three primitives (segment sums, segment maxima, expansions)
  as torch operators, with a CPU kernel and a kernel for every other device;
* :mod:`~taxosmooth.tree_ops.tables`: :class:`TreeTensors`, the compiled tree as buffers, the path layout
  of a batch of targets, and the passes over all nodes (subtree sums, log-space subtree masses, sums
  over ancestors);
* :mod:`~taxosmooth.tree_ops.paths`: what the losses compute on a batch's paths (log masses of the
  target's ancestors, segment sums and expansions of per-ring values).

Nothing here loops over samples or class pairs, builds a ``(C, C)`` tensor, reads a tensor's values on
the host or breaks a ``torch.compile`` graph; ``torch.func`` transforms, ``torch.jit.trace`` and double
backward work through all of it.
"""

from taxosmooth.tree_ops.paths import path_log_masses
from taxosmooth.tree_ops.segments import expand, segment_max, segment_sum
from taxosmooth.tree_ops.tables import PATH_TABLE_BYTES, Paths, TreeTensors, compiled_tree, tree_tensors
from taxosmooth.tree_ops.tracing import is_functorch_wrapped, is_symbolic, values_readable

__all__ = [
    "TreeTensors",
    "Paths",
    "tree_tensors",
    "compiled_tree",
    "segment_sum",
    "segment_max",
    "expand",
    "path_log_masses",
    "is_symbolic",
    "is_functorch_wrapped",
    "values_readable",
    "PATH_TABLE_BYTES",
]


def __dir__() -> list[str]:
    return list(__all__)
