"""Tree distances between classes (definitions in ``docs/concepts.md``), and the one resolver of
"a taxonomy or a matrix".

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

**Sources.** Every function that accepts "a taxonomy or a matrix" names that
argument ``source`` and resolves it with :func:`resolve_source`: a
:class:`~taxosmooth.Taxonomy` (then ``distance=`` picks the kind, default
``"lca_height"``) or a ``(C, C)`` matrix of distances (finite, ``>= 0``, zero
diagonal), used as given — passing ``distance=`` with a matrix is an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from taxosmooth._checks import check_square_matrix
from taxosmooth.taxonomy import Taxonomy

if TYPE_CHECKING:
    import torch
    from numpy.typing import ArrayLike, DTypeLike

#: what a ``source`` argument takes (see :func:`resolve_source`): a taxonomy, or a ``(C, C)`` matrix
Source: TypeAlias = "Taxonomy | torch.Tensor | ArrayLike | DistanceSource"

__all__ = [
    "DISTANCE_KINDS",
    "LCA_KINDS",
    "class_distances",
    "node_distance",
    "lca_matrix",
    "check_kind",
    "resolve_source",
    "DistanceSource",
]

DISTANCE_KINDS = ("lca_height", "lca_depth_complement", "path_length")
"""The tree distances between classes, the values of every ``distance=`` argument (default ``"lca_height"``).

``"lca_height"``: ``height(LCA(i, j))``; ``"lca_depth_complement"``: ``D - depth(LCA(i, j))``;
``"path_length"``: the (weighted) number of edges on the tree path. See :func:`class_distances`.
"""

#: kinds whose value depends only on the LCA node
LCA_KINDS = ("lca_height", "lca_depth_complement")

#: the kind used when a taxonomy is given without ``distance=``
DEFAULT_DISTANCE = "lca_height"


def check_kind(distance: str) -> str:
    if not isinstance(distance, str) or distance not in DISTANCE_KINDS:
        raise ValueError(f"unknown distance {distance!r}; choose one of {', '.join(DISTANCE_KINDS)}")
    return distance


def _check_taxonomy(taxonomy, where: str) -> Taxonomy:
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"{where}: taxonomy must be a Taxonomy, got {type(taxonomy).__name__}")
    return taxonomy


def node_distance(taxonomy: Taxonomy, distance: str = DEFAULT_DISTANCE) -> np.ndarray:
    """The distance as a function of the LCA node: ``d(i, j) = table[LCA(i, j)]`` for ``i != j``.

    Returns a float64 array ``(N,)`` indexed by compiled node id; leaves hold 0
    (``d(i, i) = 0``). Only for :data:`LCA_KINDS`: ``path_length`` also depends
    on the depths of ``i`` and ``j`` and raises ``ValueError``.

    ``lca_height``: ``table[v] = height(v)``; ``lca_depth_complement``:
    ``table[v] = D - depth(v)``.
    """
    _check_taxonomy(taxonomy, "node_distance")
    check_kind(distance)
    c = taxonomy.compiled
    if distance == "lca_height":
        table = c.height.astype(np.float64)
    elif distance == "lca_depth_complement":
        table = (c.max_depth - c.depth).astype(np.float64)
    else:
        raise ValueError(
            "path_length is not a function of the LCA node alone (it also depends on the depths of both "
            "classes); use the dense class_distances(taxonomy, 'path_length') instead"
        )
    table[c.is_leaf] = 0.0
    return table


def lca_matrix(taxonomy: Taxonomy) -> np.ndarray:
    """Compiled node id of ``LCA(i, j)`` for every pair of classes, ``(C, C)`` int32, class order.

    One running minimum per row over the LCAs of DFS-adjacent leaves
    (see :meth:`CompiledTree.lca_rows`): O(C²) work, no loop over pairs.
    """
    return _check_taxonomy(taxonomy, "lca_matrix").compiled.lca_rows()


def class_distances(taxonomy: Taxonomy, distance: str = DEFAULT_DISTANCE,
                    dtype: DTypeLike = np.float64) -> np.ndarray:
    """All-pairs class distances ``(C, C)`` in class order.

    Parameters
    ----------
    taxonomy : Taxonomy
    distance : {"lca_height", "lca_depth_complement", "path_length"}
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
    _check_taxonomy(taxonomy, "class_distances")
    check_kind(distance)
    c = taxonomy.compiled
    C = c.num_classes
    out = np.empty((C, C), dtype=dtype)
    adjacent = c.adjacent_lca()
    pos = c.class_position
    path = distance == "path_length"
    if path:
        # -2 wd(LCA) is the running maximum of -2 wd over the adjacent LCAs
        key = -2.0 * c.weighted_depth[adjacent]
        leaf_wd = c.weighted_depth[c.leaf_node]  # leaf order
        pair = np.empty(C, dtype=np.float64)
    else:
        key = node_distance(taxonomy, distance)[adjacent]  # d at the LCA = running maximum
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


class DistanceSource:
    """A resolved ``source``: a taxonomy with a distance kind, or a validated ``(C, C)`` matrix; also a resolved
    cost source (:func:`~taxosmooth.costs.resolve_costs`: ``CostSource`` is this class), whose node table holds
    the transformed costs.

    Built by :func:`resolve_source`; consumers ask it for what they need:
    the node table of an LCA kind (:attr:`node_table`, structured, O(nodes)),
    or the dense matrix (:meth:`dense`, O(C²), built on first use).

    Attributes
    ----------
    taxonomy : Taxonomy or None
        ``None`` for a matrix.
    distance : str
        The kind, or ``"matrix"``.
    num_classes : int
    node_table : ndarray (N,) or None
        ``d(i, j) = node_table[LCA(i, j)]`` for an LCA kind; ``None`` otherwise.
    """

    __slots__ = ("taxonomy", "distance", "num_classes", "node_table", "_dense", "given_dtype")

    def __init__(self, taxonomy: Taxonomy | None, distance: str, num_classes: int, node_table: np.ndarray | None,
                 dense: np.ndarray | None, given_dtype: torch.dtype | None = None) -> None:
        self.taxonomy = taxonomy
        self.distance = distance
        self.num_classes = num_classes
        self.node_table = node_table
        self._dense = dense
        self.given_dtype = given_dtype  # the floating dtype of a user matrix (numpy or torch), else None

    @property
    def structured(self) -> bool:
        """Whether the distance is a function of the LCA node (no ``(C, C)`` matrix needed)."""
        return self.node_table is not None

    def dense(self) -> np.ndarray:
        """The ``(C, C)`` float64 values, class order (a read-only array, computed once): ``node_table[LCA(i, j)]``
        (0 on the diagonal) when structured, else the taxonomy's distances of this kind."""
        if self._dense is None:
            assert self.taxonomy is not None  # a given matrix is kept as _dense: this is a taxonomy's
            if self.node_table is not None:
                d = self.node_table[lca_matrix(self.taxonomy)]
                np.fill_diagonal(d, 0.0)
            else:
                d = class_distances(self.taxonomy, self.distance)
            d.setflags(write=False)
            self._dense = d
        return self._dense

    def max_distance(self) -> float:
        """``max_{i != j} d(i, j)`` (0 for a single class), without the matrix for an LCA kind."""
        if self.node_table is not None:
            assert self.taxonomy is not None  # an LCA kind: a taxonomy's
            branching = self.taxonomy.compiled.is_branching
            return float(self.node_table[branching].max()) if branching.any() else 0.0
        return float(self.dense().max())

    def __repr__(self) -> str:
        return f"<DistanceSource {self.distance}, {self.num_classes} classes>"


def resolve_source(source: Source, distance: str | None = None, *, where: str = "source",
                   what: str = "distance matrix") -> DistanceSource:
    """Resolve a "taxonomy or matrix" argument once; the single place that decides what it means.

    Parameters
    ----------
    source : Taxonomy, array_like (C, C), Tensor (C, C) or DistanceSource
        A taxonomy, or a distance matrix (finite, ``>= 0``, zero diagonal; a
        copy is kept).
    distance : str, optional
        The tree distance for a taxonomy (default ``"lca_height"``). With a
        matrix it does not apply and is refused.
    where : str
        The caller's name, for error messages.

    Raises
    ------
    ValueError
        ``distance`` given with a matrix; an unknown kind; a malformed matrix
        (naming the first bad entry).
    TypeError
        Neither a taxonomy nor a numeric matrix.
    """
    if isinstance(source, DistanceSource):
        if distance is not None and distance != source.distance:
            raise ValueError(f"{where}: distance={distance!r} does not match the resolved source ({source.distance})")
        return source
    if isinstance(source, Taxonomy):
        kind = check_kind(DEFAULT_DISTANCE if distance is None else distance)
        table = node_distance(source, kind) if kind in LCA_KINDS else None
        if table is not None:
            table.setflags(write=False)
        return DistanceSource(source, kind, source.num_classes, table, None)
    if distance is not None:
        raise ValueError(
            f"{where}: distance={distance!r} applies to a Taxonomy; a matrix is used as given "
            "(drop distance=, or pass the taxonomy)"
        )
    if not _is_matrix_like(source):
        raise TypeError(f"{where}: expected a Taxonomy or a (C, C) matrix, got {type(source).__name__}")
    m = check_square_matrix(source, f"{where}: {what}")
    m.setflags(write=False)
    return DistanceSource(None, "matrix", int(m.shape[0]), None, m, given_float_dtype(source))


def _is_matrix_like(obj) -> bool:
    import torch

    return isinstance(obj, (np.ndarray, torch.Tensor, list, tuple))


def given_float_dtype(matrix: object) -> torch.dtype | None:
    """The floating dtype a user matrix came in (a torch dtype), or None when it was not floating."""
    import torch

    if isinstance(matrix, torch.Tensor) and matrix.is_floating_point():
        return matrix.dtype
    if isinstance(matrix, np.ndarray) and matrix.dtype in (np.float16, np.float32, np.float64):
        return torch.from_numpy(np.zeros(0, dtype=matrix.dtype)).dtype
    return None


def __dir__() -> list[str]:
    return list(__all__)
