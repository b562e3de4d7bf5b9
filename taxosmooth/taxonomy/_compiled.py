"""The compiled tree: a taxonomy as flat, read-only numpy arrays.

Nodes are numbered once, in depth-first pre-order (node 0 is the root and every
parent comes before its children; siblings in the order of their first class, so
the numbering follows from the classes and the parents alone). Leaves are laid out in that order too, so
the leaves under any node ``v`` occupy the contiguous positions
``[leaf_lo[v], leaf_hi[v])``. With that layout every hierarchy operation —
subtree sums, LCAs, ancestor paths — is array arithmetic in O(nodes) or
O(batch × nodes); see ``docs/concepts.md``.

Two orders of the classes exist and must not be confused:

* the **class order** (``classes``, the model's logit columns), and
* the **leaf order** (DFS positions ``0 … C-1``).

``class_position[c]`` is the leaf position of class ``c``;
``position_class[k]`` is the class at leaf position ``k``.

**Target ids** name any node as a label (a class, or a coarse label such as a
genus): a class keeps its class index in ``[0, C)``; the internal nodes follow
in ``[C, N)``, in node-id (depth-first) order. ``target_node[i]`` is the node
id of target id ``i`` and ``node_target`` the inverse; both are permutations
of ``0 … N-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taxosmooth.errors import TaxonomyError

#: the largest weighted depth: the sum of two of them (a path between two classes) stays a finite float64
MAX_WEIGHTED_DEPTH = float(np.finfo(np.float64).max) / 2


@dataclass(frozen=True, eq=False)
class CompiledTree:
    """Arrays that describe a rooted tree; all are read-only.

    Attributes
    ----------
    parent : int64 (N,)
        Parent node id; ``-1`` for the root (node 0).
    depth : int64 (N,)
        Edges from the root.
    height : int64 (N,)
        Edges down to the deepest leaf below (0 for a leaf).
    weight : float64 (N,)
        Weight of the edge from the parent (0 for the root; 1 when unweighted).
    weighted_depth : float64 (N,)
        Sum of edge weights from the root.
    subtree_end : int64 (N,)
        Node ids of the subtree of ``v`` are ``[v, subtree_end[v])``.
    leaf_lo, leaf_hi : int64 (N,)
        Leaf positions of the subtree of ``v`` are ``[leaf_lo[v], leaf_hi[v])``.
    leaf_node : int64 (C,)
        Node id of the leaf at each leaf position.
    class_position, position_class : int64 (C,)
        The permutation between class order and leaf order.
    class_node : int64 (C,)
        Node id of each class (class order).
    class_path : int64 (C, max_depth + 1)
        Row ``c``: node ids from class ``c`` up to the root, padded with ``-1``.
    target_node, node_target : int64 (N,)
        Node id of each target id, and the target id of each node (see the module docstring).
    levels : tuple of int64 arrays
        ``levels[d]`` are the node ids at depth ``d``.
    """

    parent: np.ndarray
    depth: np.ndarray
    height: np.ndarray
    weight: np.ndarray
    weighted_depth: np.ndarray
    subtree_end: np.ndarray
    leaf_lo: np.ndarray
    leaf_hi: np.ndarray
    leaf_node: np.ndarray
    class_position: np.ndarray
    position_class: np.ndarray
    class_node: np.ndarray
    class_path: np.ndarray
    target_node: np.ndarray
    node_target: np.ndarray
    levels: tuple

    @property
    def num_nodes(self) -> int:
        return int(self.parent.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.leaf_node.shape[0])

    @property
    def max_depth(self) -> int:
        """``D``: the largest leaf depth."""
        return int(self.depth[self.leaf_node].max())

    @property
    def is_leaf(self) -> np.ndarray:
        return self.subtree_end == np.arange(self.num_nodes) + 1

    @property
    def is_branching(self) -> np.ndarray:
        """Nodes with two or more children: exactly the LCAs of some pair of classes."""
        counts = np.bincount(self.parent[1:], minlength=self.num_nodes)
        return counts >= 2

    @property
    def padded_path(self) -> np.ndarray:
        """``class_path`` with the ``-1`` padding replaced by the root (0): safe to index with.

        Consumers mask the padded entries themselves (e.g. by ring size or depth).
        """
        return np.maximum(self.class_path, 0)

    def adjacent_lca(self) -> np.ndarray:
        """Node id of ``LCA(leaf_k, leaf_{k+1})`` for ``k = 0 … C-2`` (leaf order).

        Walk up from ``leaf_{k+1}`` while the current node's leaf range starts
        at ``k + 1``; the first node whose range starts earlier is the LCA.
        """
        c = self.num_classes
        if c < 2:
            return np.zeros(0, dtype=np.int64)
        k1 = np.arange(1, c)
        u = self.leaf_node[1:].copy()
        while True:
            up = self.leaf_lo[u] == k1
            if not up.any():
                return u
            u[up] = self.parent[u[up]]

    def lca_rows(self, rows: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """LCA node ids of class pairs, class order, without a loop over pairs.

        For leaves at positions ``a < b``, ``LCA = min(adjacent_lca[a:b])``: every
        node in that range lies in the subtree of the LCA, and in pre-order the
        subtree root has the smallest id. One running minimum per row.
        """
        c = self.num_classes
        rows = np.arange(c) if rows is None else np.asarray(rows)
        lcp = self.adjacent_lca().astype(np.int32)
        if out is None:
            out = np.empty((len(rows), c), dtype=np.int32)
        row = np.empty(c, dtype=np.int32)
        pos = self.class_position
        for i, cls in enumerate(rows):
            a = pos[cls]
            row[a] = self.leaf_node[a]
            if a + 1 < c:
                np.minimum.accumulate(lcp[a:], out=row[a + 1 :])
            if a > 0:
                np.minimum.accumulate(lcp[a - 1 :: -1], out=row[a - 1 :: -1])
            np.take(row, pos, out=out[i])
        return out


def _refuse_overflow(wdepth, w, parent, names) -> None:
    # the first node in pre-order past the limit: every ancestor is below it, so its own edge tips it over
    v = int(np.flatnonzero(~(wdepth <= MAX_WEIGHTED_DEPTH))[0])
    chain = [v]
    while parent[chain[-1]] >= 0:
        chain.append(int(parent[chain[-1]]))
    chain.reverse()
    steps = [f"{names[a]!r} -> {names[b]!r} ({w[b]:g})" for a, b in zip(chain, chain[1:])]
    shown = ", ".join(steps if len(steps) <= 6 else steps[:2] + ["..."] + steps[-3:])
    raise TaxonomyError(
        f"the edge weights from the root to {names[v]!r} add up to more than {MAX_WEIGHTED_DEPTH:.3g} (half the "
        f"largest float64), so path lengths between classes would overflow: edge {names[chain[-2]]!r} -> "
        f"{names[v]!r} has weight {w[v]:g}; path: {shown}. Rescale the weights"
    )


def compile_tree(root, children: dict, weight: dict, classes: tuple) -> tuple[CompiledTree, list]:
    """Number the nodes in DFS pre-order and derive every array.

    Returns the compiled arrays and the node names in id order.
    """
    names: list = []
    parent_ids: list[int] = []
    depth_l: list[int] = []
    stack = [(root, -1, 0)]
    while stack:
        name, par, d = stack.pop()
        nid = len(names)
        names.append(name)
        parent_ids.append(par)
        depth_l.append(d)
        ch = children.get(name, ())
        for child in reversed(ch):
            stack.append((child, nid, d + 1))
    n = len(names)
    parent = np.asarray(parent_ids, dtype=np.int64)
    depth = np.asarray(depth_l, dtype=np.int64)
    ids = np.arange(n)

    # subtree sizes: accumulate up, deepest level first
    max_d = int(depth.max())
    # one stable sort, not one comparison per depth (that is O(N * D): minutes for a 100,000-deep chain)
    by_depth = np.argsort(depth, kind="stable")
    levels = tuple(np.split(by_depth, np.cumsum(np.bincount(depth, minlength=max_d + 1))[:-1]))
    size = np.ones(n, dtype=np.int64)
    height = np.zeros(n, dtype=np.int64)
    for d in range(max_d, 0, -1):
        lv = levels[d]
        np.add.at(size, parent[lv], size[lv])
        np.maximum.at(height, parent[lv], height[lv] + 1)
    subtree_end = ids + size

    w = np.asarray([weight[name] for name in names], dtype=np.float64)
    wdepth = w.copy()
    with np.errstate(over="ignore"):
        for d in range(1, max_d + 1):
            lv = levels[d]
            wdepth[lv] += wdepth[parent[lv]]
    if not np.all(wdepth <= MAX_WEIGHTED_DEPTH):
        _refuse_overflow(wdepth, w, parent, names)

    is_leaf = size == 1
    cum = np.concatenate([[0], np.cumsum(is_leaf)])
    leaf_lo = cum[ids]
    leaf_hi = cum[subtree_end]
    leaf_node = np.flatnonzero(is_leaf)

    index = {name: i for i, name in enumerate(names)}
    class_node = np.asarray([index[c] for c in classes], dtype=np.int64)
    class_position = leaf_lo[class_node]
    position_class = np.empty_like(class_position)
    position_class[class_position] = np.arange(len(classes))

    leaf_depth = depth[class_node]
    path = np.full((len(classes), int(leaf_depth.max()) + 1), -1, dtype=np.int64)
    path[:, 0] = class_node
    for k in range(1, path.shape[1]):
        prev = path[:, k - 1]
        ok = prev > 0  # the root (id 0) has no parent
        path[ok, k] = parent[prev[ok]]

    # target ids: the classes in class order, then the internal nodes in node-id order
    target_node = np.concatenate([class_node, np.flatnonzero(~is_leaf)])
    node_target = np.empty_like(target_node)
    node_target[target_node] = ids

    arrays = dict(
        parent=parent, depth=depth, height=height, weight=w, weighted_depth=wdepth,
        subtree_end=subtree_end, leaf_lo=leaf_lo, leaf_hi=leaf_hi, leaf_node=leaf_node,
        class_position=class_position, position_class=position_class, class_node=class_node,
        class_path=path, target_node=target_node, node_target=node_target,
    )
    for a in list(arrays.values()) + list(levels):
        a.setflags(write=False)
    return CompiledTree(**arrays, levels=levels), names
