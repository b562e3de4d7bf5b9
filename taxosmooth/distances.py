"""Tree distances between classes (definitions in ``docs/concepts.md``).

For classes ``i != j`` with lowest common ancestor ``LCA(i, j)``:

* ``lca_height``: ``height(LCA(i, j))`` — Bertinetto et al., "Making Better
  Mistakes", CVPR 2020 ("height of the lowest common ancestor").
* ``lca_depth_complement``: ``D - depth(LCA(i, j))``, ``D`` the largest class
  depth — the distance files shipped with that paper's public code; equal to
  ``lca_height`` when every class sits at depth ``D``.
* ``path_length``: ``depth(i) + depth(j) - 2 depth(LCA(i, j))``, the number of
  edges on the tree path (the sum of edge weights when the tree is weighted).

Edge weights enter ``path_length`` only: the two LCA kinds count edges, as
their definitions (heights and depths of nodes) do.

Every distance is 0 on the diagonal. The first two are functions of the LCA
node alone (:func:`node_distance`), which is what lets losses, targets and
decisions stay structured: O(batch × nodes) instead of O(batch × classes²).
"""

from __future__ import annotations

import numpy as np

from taxosmooth.taxonomy import DISTANCE_KINDS, Taxonomy

__all__ = ["DISTANCE_KINDS", "LCA_KINDS", "class_distances", "node_distance", "lca_matrix", "check_kind"]

#: kinds whose value depends only on the LCA node
LCA_KINDS = ("lca_height", "lca_depth_complement")


def check_kind(kind: str) -> str:
    if kind not in DISTANCE_KINDS:
        raise ValueError(f"unknown distance kind {kind!r}; choose one of {', '.join(DISTANCE_KINDS)}")
    return kind


def node_distance(tax: Taxonomy, kind: str = "lca_height") -> np.ndarray:
    """The distance as a function of the LCA node: ``d(i, j) = table[LCA(i, j)]`` for ``i != j``.

    Returns a float64 array ``(N,)`` indexed by compiled node id; leaves hold 0
    (``d(i, i) = 0``). Only for :data:`LCA_KINDS`: ``path_length`` also depends
    on the depths of ``i`` and ``j`` and raises ``ValueError``.

    ``lca_height``: ``table[v] = height(v)``; ``lca_depth_complement``:
    ``table[v] = D - depth(v)``.
    """
    check_kind(kind)
    c = tax.compiled
    if kind == "lca_height":
        table = c.height.astype(np.float64)
    elif kind == "lca_depth_complement":
        table = (c.max_depth - c.depth).astype(np.float64)
    else:
        raise ValueError(
            "path_length is not a function of the LCA node alone (it also depends on the depths of both "
            "classes); use the dense class_distances(tax, 'path_length') instead"
        )
    table[c.is_leaf] = 0.0
    return table


def lca_matrix(tax: Taxonomy) -> np.ndarray:
    """Compiled node id of ``LCA(i, j)`` for every pair of classes, ``(C, C)`` int32, class order.

    One running minimum per row over the LCAs of DFS-adjacent leaves
    (see :meth:`CompiledTree.lca_rows`): O(C²) work, no loop over pairs.
    """
    return tax.compiled.lca_rows()


def class_distances(tax: Taxonomy, kind: str = "lca_height", dtype=np.float64) -> np.ndarray:
    """All-pairs class distances ``(C, C)`` in class order.

    Parameters
    ----------
    tax : Taxonomy
    kind : {"lca_height", "lca_depth_complement", "path_length"}
        See the module docstring for the formulas.
    dtype : numpy dtype, default float64

    Notes
    -----
    For leaves at DFS positions ``a < b`` every LCA of two DFS-adjacent leaves
    in ``[a, b)`` lies in the subtree of ``LCA(a, b)``, and ``LCA(a, b)`` is one
    of them. The LCA kinds grow strictly up the tree, so ``d(a, b)`` is the
    running *maximum* of the adjacent-LCA values; the weighted depth grows
    strictly down the tree, so for ``path_length`` ``-2 wd(LCA(a, b))`` is the
    running maximum of ``-2 wd`` over them. One running max/min per row and one gather
    into class order: O(C²), no loop over pairs, no C×C index array.

    Examples
    --------
    >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> class_distances(tax, "path_length")[0].tolist()
    [0.0, 2.0, 4.0, 4.0]
    """
    check_kind(kind)
    c = tax.compiled
    C = c.num_classes
    out = np.empty((C, C), dtype=dtype)
    adjacent = c.adjacent_lca()
    pos = c.class_position
    path = kind == "path_length"
    if path:
        # -2 wd(LCA) is the running maximum of -2 wd over the adjacent LCAs
        key = -2.0 * c.weighted_depth[adjacent]
        leaf_wd = c.weighted_depth[c.leaf_node]  # leaf order
        pair = np.empty(C, dtype=np.float64)
    else:
        key = node_distance(tax, kind)[adjacent]  # d at the LCA = running maximum
    running = np.maximum.accumulate
    row = np.empty(C, dtype=np.float64)  # one row in leaf order
    direct = out.dtype == np.float64  # gather straight into the output row
    for i in range(C):
        a = pos[i]
        if a + 1 < C:
            running(key[a:], out=row[a + 1 :])
        if a > 0:
            running(key[a - 1 :: -1], out=row[a - 1 :: -1])
        if path:
            # (wd(a) + wd(b)) - 2 wd(LCA), rounded as the formula reads
            np.add(leaf_wd, leaf_wd[a], out=pair)
            row += pair
        row[a] = 0.0
        if direct:
            np.take(row, pos, out=out[i])
        else:
            out[i] = row[pos]
    return out
