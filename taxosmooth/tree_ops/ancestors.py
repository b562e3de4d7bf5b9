"""Ancestor queries on node ids: is one node under another, their lowest common ancestor, the ancestor at a depth.

Node ids are the compiled tree's (:class:`~taxosmooth.taxonomy.CompiledTree`): depth-first pre-order, so the
subtree of ``v`` is the id range ``[v, end(v))`` with ``end(v) = v + size(v)``, ``size(v)`` the number of
nodes under ``v`` (itself included). Two tables of a :class:`~taxosmooth.tree_ops.TreeTensors`, built once
by torch on its device (:func:`ancestor_table`):

* ``end`` ``(N,)``: ``u`` is under ``v`` (or is ``v``) iff ``v <= u < end(v)``, one gather;
* ``jump`` ``(L, N)``: ``jump[k, v]`` is the ``2^k``-th ancestor of ``v`` (the root past the top), ``L`` the
  bit length of the deepest depth ``D`` (binary lifting, the "jump pointers" of Bender & Farach-Colton,
  "The level ancestor problem simplified", Theoretical Computer Science 321, 2004). O(N log D) memory.

Then, for node ids of any broadcastable shapes:

* the ancestor of ``v`` at depth ``d`` takes the jumps of the bits of ``depth(v) - d``: ``L`` gathers;
* ``LCA(a, b)`` is ``a`` when ``b`` is under ``a``; otherwise the ancestors of ``a`` that hold ``b`` are a
  path from the root, and trying the jumps from the longest down finds the highest ancestor ``w`` of ``a``
  that does not hold ``b``: ``LCA(a, b) = parent(w)``. ``L`` steps of one jump and one range test.

Every query is elementwise torch ops on the tables' device: no ``(C, C)`` or ``(N, D)`` table, no host
read, no shape that depends on values; ``torch.compile`` traces it whole.
"""

from __future__ import annotations

import torch
from torch import nn

from taxosmooth.tree_ops import nodes as node_passes

__all__ = ["AncestorTable", "ancestor_table", "take"]


def take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D table and an index of any shape, by ``index_select``.

    (Advanced indexing ``table[index]`` can cost far more on a busy multi-threaded CPU: its parallel kernel
    waits on the thread pool.)
    """
    return table.index_select(0, index.reshape(-1)).reshape(index.shape)


class AncestorTable(nn.Module):
    """The ancestor tables of a tree (see the module docstring) and the queries on them.

    Parameters
    ----------
    tree : TreeTensors
        The tables are built on its device, from its ``parent``, ``node_depth`` and levels.

    Attributes
    ----------
    num_jumps : int
        ``L``, the rows of ``jump``: ``2^L > D``.
    max_depth : int
        ``D``, the largest depth of a node.

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> from taxosmooth.tree_ops.ancestors import ancestor_table
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> anc = ancestor_table(ts.TreeTensors(tax))
    >>> ids = torch.tensor([tax.node_index(n) for n in ("horse", "zebra", "whale", "sea")])
    >>> [tax.nodes[v] for v in anc.lca(ids[0], ids).tolist()]
    ['horse', 'mammal', 'animal', 'animal']
    >>> anc.is_under(ids, torch.tensor(tax.node_index("sea"))).tolist()
    [False, False, True, True]
    """

    jump: torch.Tensor
    end: torch.Tensor
    parent: torch.Tensor
    depth: torch.Tensor

    def __init__(self, tree) -> None:
        super().__init__()
        n = tree.num_nodes
        self.max_depth = len(tree.level_offsets) - 2
        self.num_jumps = max(1, self.max_depth.bit_length())
        jumps = [tree.parent]  # parent(root) = root: jumps past the top stay at the root
        for _ in range(1, self.num_jumps):
            jumps.append(jumps[-1].index_select(0, jumps[-1]))
        ones = torch.ones(n, 1, dtype=torch.int64, device=tree.parent.device)
        size = node_passes.up(tree, ones, overwrite=True)[:, 0].index_select(0, tree.level_pos)
        self.register_buffer("jump", torch.stack(jumps), persistent=False)
        self.register_buffer("end", torch.arange(n, device=size.device) + size, persistent=False)
        self.register_buffer("parent", tree.parent, persistent=False)
        self.register_buffer("depth", tree.node_depth, persistent=False)

    def extra_repr(self) -> str:
        return f"num_nodes={self.end.shape[0]}, max_depth={self.max_depth}, num_jumps={self.num_jumps}"

    def is_under(self, node: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """Whether ``node`` is ``top`` or one of its descendants: ``top <= node < end(top)`` (node ids, broadcast)."""
        return (top <= node) & (node < take(self.end, top))

    def truncate(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """``label`` where ``pred`` is at or under it, else ``pred`` (node ids, broadcast).

        A coarse label ``v`` says the truth is somewhere under ``v``: the part of a prediction below ``v`` can
        be neither confirmed nor refuted, so it counts as ``v``.
        """
        return torch.where(self.is_under(pred, label), label, pred)

    def ancestor_at_depth(self, nodes: torch.Tensor, depth: int | torch.Tensor) -> torch.Tensor:
        """The ancestor of each node at ``depth`` (the node itself at its own depth); ``-1`` where the node is
        shallower.

        ``depth(v) - depth`` steps up, as the jumps of its binary digits: ``L`` gathers. ``depth`` is an int or
        a tensor that broadcasts with ``nodes``.
        """
        up = take(self.depth, nodes) - depth
        steps = up.clamp(min=0)
        v = nodes.expand_as(steps)
        for k in range(self.num_jumps):
            v = torch.where((steps >> k) & 1 == 1, take(self.jump[k], v), v)
        return torch.where(up >= 0, v, torch.full_like(v, -1))

    def lca(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Node id of ``LCA(a, b)`` for node ids of any broadcastable shapes.

        ``a`` when ``b`` is under ``a``; else ``parent(w)`` for the highest ancestor ``w`` of ``a`` that does
        not hold ``b``, found by binary lifting from the longest jump down (module docstring): ``2L + 2``
        gathers, whatever the depth of the two nodes.
        """
        a, b = torch.broadcast_tensors(a, b)
        w = a
        for k in range(self.num_jumps - 1, -1, -1):
            up = take(self.jump[k], w)
            w = torch.where(self.is_under(b, up), w, up)
        return torch.where(self.is_under(b, a), a, take(self.parent, w))


def ancestor_table(tree) -> AncestorTable:
    """The :class:`AncestorTable` of a :class:`~taxosmooth.tree_ops.TreeTensors`, built once on its device
    (kept by :meth:`~taxosmooth.tree_ops.TreeTensors.derived`)."""
    return tree.derived(("tree_ops.ancestors",), lambda: AncestorTable(tree))
