"""One taxonomy's tensors for the decisions at any node and the metrics: LCAs, node values, node passes.

Labels and predictions are **target ids** (:meth:`~taxosmooth.Taxonomy.encode`):
classes in ``[0, C)``, internal nodes in ``[C, N)``. Internally they are
compiled node ids (depth-first pre-order), where the subtree of ``u`` is the id
range ``[u, subtree_end[u])``.

**LCA of two nodes** ``a`` and ``b``: ``a`` itself when it is an ancestor of
``b`` (or ``b``), ``b`` when ``b`` is an ancestor of ``a``; otherwise the two
subtrees are disjoint and their LCA is that of any leaf of each: with leaves at
DFS positions ``i < j`` it is ``min(adjacent_lca[i:j])`` (node ids: in
pre-order a subtree root has the smallest id of its subtree), a range minimum
answered in O(1) from a sparse table of ``C log C`` entries. No ``C × C`` table
and no ``classes × depth`` table: any depth, any device.

**Node passes** (subtree sums bottom-up, sums over ancestors top-down) go level
by level: each level is one gather, one segment sum (children of one parent are
consecutive in pre-order) and one scatter; sums add the children directly, in a
fixed order, so they are exact to rounding and deterministic on every device.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from taxosmooth.taxonomy import Taxonomy

__all__ = ["TreeIndex", "tree_index", "take"]


def take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D table and an index of any shape, by ``index_select``.

    (Advanced indexing ``table[index]`` can cost a hundred times more on a busy
    multi-threaded CPU: its parallel kernel waits on the thread pool.)
    """
    return table.index_select(0, index.reshape(-1)).reshape(index.shape)


def _sparse_min_table(values: np.ndarray) -> np.ndarray:
    """``table[j, i] = min(values[i : i + 2**j])`` (the largest int64 past the end)."""
    n = len(values)
    levels = max(1, int(n).bit_length())
    table = np.full((levels, max(n, 1)), np.iinfo(np.int64).max, dtype=np.int64)
    table[0, :n] = values
    for j in range(1, levels):
        half = 1 << (j - 1)
        table[j, : n - half] = np.minimum(table[j - 1, : n - half], table[j - 1, half:n])
    return table


class TreeIndex:
    """Tensors of one taxonomy, built once (:func:`tree_index` caches them) and moved per device.

    Node arrays are in **compiled node id** order; :meth:`node_of` maps target
    ids to node ids and :meth:`target_of` back.

    Node values: ``depth`` (edges from the root), ``weighted_depth`` (sum of
    edge weights), ``leaves`` (the number of classes under the node, ``n(v)``)
    and ``info``, the information of the node under a uniform prior over the
    classes, ``log2(C / n(v))`` bits (Valmadre, "Hierarchical classification at
    multiple operating points", NeurIPS 2022: −log of the leaf fraction; the
    root has 0).
    """

    def __init__(self, taxonomy: Taxonomy):
        c = taxonomy.compiled
        # no reference to the taxonomy: the cache below is keyed weakly by its compiled tree
        self.num_classes = c.num_classes
        self.num_nodes = c.num_nodes
        self.max_depth = int(c.depth.max())
        leaves = (c.leaf_hi - c.leaf_lo).astype(np.int64)
        adj = c.adjacent_lca().astype(np.int64)
        lg = np.zeros(max(c.num_classes, 2), dtype=np.int64)
        lg[2:] = np.floor(np.log2(np.arange(2, len(lg)))).astype(np.int64)
        parent = np.where(c.parent >= 0, c.parent, 0)
        self.depth_np = np.array(c.depth)
        self.leaves_np = leaves
        self.node_target_np = np.array(c.node_target)
        self.n_children_np = np.bincount(c.parent[1:], minlength=c.num_nodes)
        cpu = {
            "target_node": np.array(c.target_node),
            "node_target": np.array(c.node_target),
            "class_node": np.array(c.class_node),
            "subtree_end": np.array(c.subtree_end),
            "leaf_lo": np.array(c.leaf_lo),
            "parent": parent,
            "depth": np.array(c.depth),
            "weighted_depth": np.array(c.weighted_depth),
            "leaves": leaves,
            "info": np.log2(c.num_classes / leaves),
            "is_leaf": np.array(c.is_leaf),
            "rmq": _sparse_min_table(adj),
            "log2": lg,
            "pow2": np.left_shift(1, np.arange(62, dtype=np.int64)),
            "level_of_depth": np.concatenate([[0], np.cumsum([len(lv) for lv in c.levels])]),
            "levels_concat": np.concatenate(c.levels),
        }
        # one step of the node passes per depth d >= 1: the nodes of depth d, their parents' runs
        steps = []
        for d in range(len(c.levels) - 1, 0, -1):
            children = c.levels[d]
            parents, counts = np.unique(c.parent[children], return_counts=True)
            steps.append((children, parents, counts))
        self._steps_np = steps
        self._host_steps = [(ch, pa, np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)) for ch, pa, cnt in steps]
        self._host_plan = [_slot_plan(ch, pa, cnt) for ch, pa, cnt in steps]
        self.class_node_np = np.array(c.class_node)
        self.parent_np = parent
        self._cpu = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in cpu.items()}
        self._cache: dict = {}
        self._step_cache: dict = {}

    # ------------------------------------------------------------------ devices
    def tensors(self, device) -> dict:
        key = str(torch.device(device))
        if key not in self._cache:
            self._cache[key] = {k: v.to(device) for k, v in self._cpu.items()}
        return self._cache[key]

    def _steps(self, device) -> list:
        key = str(torch.device(device))
        if key not in self._step_cache:
            self._step_cache[key] = [
                tuple(torch.from_numpy(np.array(a)).to(device) for a in step) for step in self._steps_np
            ]
        return self._step_cache[key]

    # ------------------------------------------------------------------ ids
    def node_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Compiled node ids of target ids."""
        return take(self.tensors(ids.device)["target_node"], ids)

    def target_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """Target ids of compiled node ids."""
        return take(self.tensors(nodes.device)["node_target"], nodes)

    def value(self, name: str, nodes: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
        """A node value (``depth``, ``weighted_depth``, ``leaves``, ``info``) at compiled node ids."""
        return take(self.tensors(nodes.device)[name], nodes).to(dtype)

    # ------------------------------------------------------------------ ancestry
    def is_under(self, node: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """Whether ``node`` is ``top`` or one of its descendants (compiled ids, broadcast)."""
        end = self.tensors(node.device)["subtree_end"]
        return (top <= node) & (node < take(end, top))

    def lca(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Compiled node id of ``LCA(a, b)`` for compiled node ids of any broadcastable shapes."""
        t = self.tensors(a.device)
        a, b = torch.broadcast_tensors(a, b)
        la, lb = take(t["leaf_lo"], a), take(t["leaf_lo"], b)
        lo, hi = torch.minimum(la, lb), torch.maximum(la, lb)
        rmq = t["rmq"]
        width = rmq.shape[1]
        # disjoint subtrees have lo < hi: min(adjacent_lca[lo:hi]); elsewhere the query is unused (kept in range)
        j = take(t["log2"], (hi - lo).clamp(min=1))
        left = lo.clamp(max=width - 1)
        right = (hi - take(t["pow2"], j)).clamp(min=0, max=width - 1)
        flat = rmq.view(-1)
        m = torch.minimum(take(flat, j * width + left), take(flat, j * width + right))
        return torch.where(self.is_under(b, a), a, torch.where(self.is_under(a, b), b, m))

    def truncate(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """A prediction at or below the label counts as the label (compiled ids).

        A coarse label ``v`` says the truth is somewhere under ``v``: the part of
        a prediction below ``v`` can be neither confirmed nor refuted.
        """
        return torch.where(self.is_under(pred, label), label, pred)

    def ancestor_at_depth(self, nodes: torch.Tensor, depth: int) -> torch.Tensor:
        """Compiled id of the ancestor at ``depth`` (the node itself at its own depth); ``-1`` where shallower.

        The ancestor at depth ``k`` of ``v`` is the last node of depth ``k`` at or
        before ``v`` in pre-order, when ``v`` lies in its subtree: a binary search.
        """
        t = self.tensors(nodes.device)
        if depth > self.max_depth:
            return torch.full_like(nodes, -1)
        off = t["level_of_depth"]
        level = t["levels_concat"][int(off[depth]) : int(off[depth + 1])]
        k = torch.searchsorted(level, nodes.contiguous(), right=True) - 1
        u = take(level, k.clamp(min=0))
        inside = (k >= 0) & (nodes < take(t["subtree_end"], u)) & (take(t["depth"], nodes) >= depth)
        return torch.where(inside, u, torch.full_like(u, -1))

    # ------------------------------------------------------------------ node passes (node-major layout)
    # Node values are laid out (N, B): one row per node, so that a level's gathers copy whole rows and its
    # sums run along the samples. On the CPU, without autograd, numpy adds each parent's children one
    # child slot at a time (_slot_plan: several times faster than torch's segment_reduce or numpy's reduceat
    # along rows); elsewhere torch's segment_reduce, differentiably and deterministically.
    def subtree_sum_t(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` class-order values → ``(N, B)``: the sum over each node's classes, compiled order."""
        if use_host(x):
            xn = x.detach().numpy()
            out: Any = np.zeros((self.num_nodes, xn.shape[0]), dtype=xn.dtype)  # numpy here, torch below
            out[self.class_node_np] = xn.T
            if xn.shape[0]:
                for parents, first, slots, big, rest, rest_starts in self._host_plan:
                    acc = out[first]
                    for sel, kth in slots:
                        acc[sel] += out[kth]
                    if len(big):
                        acc[big] += np.add.reduceat(out[rest], rest_starts, axis=0)
                    out[parents] = acc
            return torch.from_numpy(out)
        t = self.tensors(x.device)
        out = x.new_zeros((self.num_nodes, x.shape[0]))
        out = out.index_copy(0, t["class_node"], x.T)
        if x.shape[0] == 0:
            return out
        inplace = not out.requires_grad  # out of place only where autograd records the passes
        for children, parents, counts in self._steps(x.device):
            sums = torch.segment_reduce(out.index_select(0, children), "sum", lengths=counts, axis=0)
            out = out.index_copy_(0, parents, sums) if inplace else out.index_copy(0, parents, sums)
        return out

    def accumulate_down_t(self, values: torch.Tensor) -> torch.Tensor:
        """``(N, B)`` node values → the sums over each node's ancestors, itself included (compiled order)."""
        if use_host(values):
            out = values.detach().numpy().copy()
            for children, _, _ in reversed(self._host_steps):
                out[children] += out[self.parent_np[children]]
            return torch.from_numpy(out)
        parent = self.tensors(values.device)["parent"]
        inplace = not values.requires_grad
        out = values.clone() if inplace else values
        for children, _, _ in reversed(self._steps(values.device)):
            above = out.index_select(0, parent[children])
            out = out.index_add_(0, children, above) if inplace else out.index_add(0, children, above)
        return out


#: children added one at a time (per child slot) before the rest of a large family is summed in one reduceat
_SLOTS = 8


def _slot_plan(children: np.ndarray, parents: np.ndarray, counts: np.ndarray) -> tuple:
    """How one level's subtree sums are added on the host: the first child of every parent, then the k-th child
    of the parents that have one (k < 8), then the remaining children of the large families in one reduceat.
    Each parent adds its children in their order; a sum of non-negative values never falls below a child's."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    slots = [(np.flatnonzero(counts > k), children[starts[counts > k] + k]) for k in range(1, min(_SLOTS, int(counts.max())))]
    big = np.flatnonzero(counts > _SLOTS)
    if len(big):
        rest = np.concatenate([children[starts[i] + _SLOTS : starts[i] + counts[i]] for i in big])
        rest_starts = np.concatenate([[0], np.cumsum(counts[big] - _SLOTS)[:-1]]).astype(np.int64)
    else:
        rest = rest_starts = np.zeros(0, dtype=np.int64)
    return parents, children[starts], slots, big, rest, rest_starts


def use_host(x: torch.Tensor) -> bool:
    """numpy kernels for eager float32/float64 CPU tensors that need no gradient."""
    from taxosmooth.tree_ops import is_symbolic

    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad
            and not is_symbolic(x))


_INDEX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tree_index(taxonomy) -> TreeIndex:
    """The cached :class:`TreeIndex` of a :class:`~taxosmooth.Taxonomy` (one per compiled tree)."""
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"expected a Taxonomy, got {type(taxonomy).__name__}")
    key = taxonomy.compiled
    index = _INDEX.get(key)
    if index is None:
        index = _INDEX[key] = TreeIndex(taxonomy)
    return index
