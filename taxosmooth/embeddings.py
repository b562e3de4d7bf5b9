"""Class vectors from the hierarchy: Barz & Denzler's embeddings and HAFrame's fixed classifier frame.

Both place one unit vector per class so that the dot product of two classes'
vectors is a prescribed similarity of the classes in the taxonomy; the
vectors are a factor of the similarity matrix.

* :func:`class_embeddings` — Barz & Denzler, WACV 2019, "Hierarchy-based image
  embeddings for semantic image retrieval": ``φ_i · φ_j = 1 - d(i, j) / max d``.
  Trained with :class:`taxosmooth.losses.CosineLoss` (``1 - cos(ψ(x), φ_y)``), alone or with a
  cross-entropy term (:class:`taxosmooth.heads.EmbeddingHead`).
* :func:`haframe_weights` — Liang & Davis, ICCV 2023, "Inducing neural collapse
  to a fixed hierarchy-aware frame for reducing mistake severity" (HAFrame):
  ``w_i · w_j = (1 - s_min) exp(-γ d(i, j) / max d) + s_min``, with ``s_min`` the
  most negative value that keeps the matrix positive semidefinite; the fixed
  weights of a classifier (:class:`taxosmooth.heads.FixedClassifier`).

A similarity matrix has such vectors exactly when it is positive
semidefinite, and they need as many dimensions as its rank. For the LCA
distances (``lca_height``, ``lca_depth_complement``) the similarity is a
non-decreasing function of the LCA's place down the tree (1 on the diagonal),
which makes it a sum of non-negative multiples of ``1_{L(v)} 1_{L(v)}^T``
over the nodes ``v`` (``L(v)`` the classes under ``v``): always positive
semidefinite. ``path_length`` and user matrices may not be.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.distances import Source, resolve_source
from taxosmooth.losses.cosine import CosineLoss  # noqa: F401  (its first home; the loss lives in taxosmooth.losses)

__all__ = ["class_similarity", "class_embeddings", "haframe_similarity", "haframe_weights"]

MAPPINGS = ("exponential", "linear")


# ---------------------------------------------------------------------- helpers
def _distances(source, distance, where: str):
    """``(C, C)`` float64 distances of a resolved source (a taxonomy's kind, or a user matrix: symmetric)."""
    src = resolve_source(source, distance, where=where)
    if src.num_classes < 2:
        raise ValueError(f"{where}: the source has {src.num_classes} class; class vectors need at least 2")
    d = src.dense()
    if src.taxonomy is None:
        asym = np.abs(d - d.T) > 1e-12 * max(1.0, float(np.abs(d).max()))
        if asym.any():
            i, j = np.argwhere(asym)[0]
            raise ValueError(f"{where}: distance matrix[{i}, {j}] = {d[i, j]} but [{j}, {i}] = {d[j, i]}; "
                             "a similarity needs a symmetric distance")
    return d, src


def _max_distance(d: np.ndarray, where: str) -> float:
    top = float(d.max())
    if top <= 0:
        raise ValueError(f"{where}: every distance between classes is 0; no similarity can be scaled by max d")
    return top


def _check_dim(dim, rank: int, where: str, what: str) -> int:
    if dim is None:
        return rank
    if isinstance(dim, bool) or not isinstance(dim, (numbers.Integral, np.integer)):
        raise TypeError(f"{where}: dim must be an int >= {rank} (or None), got {dim!r}")
    if dim < rank:
        raise ValueError(f"{where}: dim = {dim} is too small for an exact embedding: {what} has rank {rank}; "
                         f"use dim >= {rank} (or dim=None)")
    return int(dim)


def _eigh(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors, each vector's largest entry made positive (a fixed sign)."""
    w, v = np.linalg.eigh(s)
    w, v = w[::-1], v[:, ::-1]
    k = np.abs(v).argmax(0)
    v = v * np.where(v[k, np.arange(v.shape[1])] < 0, -1.0, 1.0)
    return w, v


# ---------------------------------------------------------------------- Barz & Denzler
def class_similarity(source: Source, distance: str | None = None) -> np.ndarray:
    """``s(i, j) = 1 - d(i, j) / max d``, ``(C, C)`` float64 in class order (Barz & Denzler, WACV 2019).

    ``source``: a :class:`~taxosmooth.Taxonomy` (``distance`` picks the kind:
    ``"lca_height"`` by default, ``"lca_depth_complement"``, ``"path_length"``)
    or a ``(C, C)`` distance matrix (finite, ``>= 0``, zero diagonal, symmetric),
    see :func:`taxosmooth.distances.resolve_source`.

    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> class_similarity(tax)[0].tolist()
    [1.0, 0.5, 0.0, 0.0]
    """
    d, _ = _distances(source, distance, "class_similarity")
    return 1.0 - d / _max_distance(d, "class_similarity")


def class_embeddings(source: Source, distance: str | None = None, dim: int | None = None, *,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Unit class vectors whose dot products are the class similarity (Barz & Denzler, WACV 2019).

    .. math::

        \\varphi_i \\cdot \\varphi_j = 1 - \\frac{d(i, j)}{\\max d}, \\qquad \\|\\varphi_i\\| = 1

    exactly (to rounding). Barz & Denzler place the classes one at a time, each
    solving a triangular system against the ones before (a Cholesky factor,
    ``C`` dimensions, for a positive definite similarity); here the vectors are
    the eigenvectors of the similarity scaled by the square roots of its
    eigenvalues, which gives the same dot products (the two differ by a
    rotation) and only as many dimensions as the similarity's rank.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        At least two classes; as in :func:`class_similarity`.
    distance : str, optional
        With a taxonomy (default ``"lca_height"``). The LCA distances always
        give an exact embedding; others (and matrices) must give a positive
        semidefinite similarity.
    dim : int, optional
        Width of the vectors: the similarity's rank by default (at most ``C``);
        a larger ``dim`` pads with zeros; a smaller one is an error naming the rank.
    dtype : torch dtype, default float64

    Returns
    -------
    Tensor ``(C, dim)``, rows in class order.

    Raises
    ------
    ValueError
        If the similarity is not positive semidefinite (no vectors have those
        dot products), or ``dim`` is below its rank.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> phi = class_embeddings(tax)
    >>> phi.shape
    torch.Size([4, 4])
    >>> (phi @ phi.T)[0].round(decimals=6).tolist()
    [1.0, 0.5, 0.0, 0.0]
    """
    where = "class_embeddings"
    d, src = _distances(source, distance, where)
    s = 1.0 - d / _max_distance(d, where)
    w, v = _eigh(s)
    tol = s.shape[0] * np.finfo(np.float64).eps * max(1.0, float(w[0]))
    if w[-1] < -1e3 * tol:
        name = repr(src.distance) if src.taxonomy is not None else "the given matrix"
        raise ValueError(
            f"{where}: the similarity 1 - d/max d of distance={name} is not positive semidefinite (smallest "
            f"eigenvalue {w[-1]:.3g}): no unit vectors have these dot products; use distance='lca_height' or "
            "'lca_depth_complement', whose similarities always are"
        )
    rank = int(np.sum(w > tol))
    dim = _check_dim(dim, rank, where, "the similarity")
    out = np.zeros((s.shape[0], dim), dtype=np.float64)
    out[:, :rank] = v[:, :rank] * np.sqrt(w[:rank])
    out /= np.linalg.norm(out, axis=1, keepdims=True)  # the diagonal is 1: only rounding to remove
    return torch.from_numpy(out).to(dtype)


# ---------------------------------------------------------------------- HAFrame
def _haframe_map(d: np.ndarray, top: float, mapping: str, gamma: float, s_min: float) -> np.ndarray:
    if mapping == "exponential":
        return (1.0 - s_min) * np.exp(-gamma * d / top) + s_min
    return 1.0 - (1.0 - s_min) * d / top


def _is_psd(s: np.ndarray) -> bool:
    """HAFrame's test: eigenvalues of magnitude below 1e-6 count as 0; none may be negative."""
    w = np.linalg.eigvalsh(s)
    w[np.abs(w) < 1e-6] = 0.0
    return bool(w.min() >= 0)


def haframe_similarity(source: Source, distance: str | None = None, *, gamma: float = 1.0,
                       mapping: str = "exponential", min_similarity: float | None = None,
                       candidates: int = 100) -> tuple[np.ndarray, float]:
    """HAFrame's cosine similarities of the classes, and the ``s_min`` they use (Liang & Davis, ICCV 2023).

    .. math::

        S_{ij} = (1 - s_{\\min})\\, e^{-\\gamma\\, d(i, j) / \\max d} + s_{\\min}
        \\quad \\text{("exponential")}, \\qquad
        S_{ij} = 1 - (1 - s_{\\min})\\, \\frac{d(i, j)}{\\max d} \\quad \\text{("linear")}

    ``S_ii = 1``; the farthest pairs get ``s_min`` ("linear") or
    ``(1 - s_min) e^{-γ} + s_min``. By default ``s_min`` is, as in the
    authors' code, the most negative of ``candidates`` values evenly spaced
    from ``-1/(C-1)`` (the simplex frame's cosine) to ``-1`` for which ``S``
    stays positive semidefinite (eigenvalues of magnitude below ``1e-6`` count
    as 0): the classes as far apart as the hierarchy allows.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
    distance : str, optional
        As in :func:`class_similarity` (with a taxonomy; default ``"lca_height"``).
    gamma : float, default 1.0
        Decay of the exponential mapping, ``> 0``. The paper's runs used 1
        (FGVC-Aircraft), 2 (CIFAR-100), 3 (tieredImageNet-H) and 5
        (iNaturalist-19).
    mapping : {"exponential", "linear"}, default "exponential"
    min_similarity : float, optional
        ``s_min`` in ``[-1, 1)``; it must keep ``S`` positive semidefinite.
    candidates : int, default 100
        Grid size of the search for ``s_min``.

    Returns
    -------
    ``(S, s_min)``: ``(C, C)`` float64 in class order, and the float used.
    """
    where = "haframe_similarity"
    if mapping not in MAPPINGS:
        raise ValueError(f"{where}: mapping must be one of {', '.join(map(repr, MAPPINGS))}, got {mapping!r}")
    gamma = check_positive(gamma, "gamma")
    d, _ = _distances(source, distance, where)
    top = _max_distance(d, where)
    c = d.shape[0]
    if min_similarity is not None:
        s_min = float(min_similarity)
        if not -1.0 <= s_min < 1.0:
            raise ValueError(f"{where}: min_similarity must be in [-1, 1), got {min_similarity!r}")
        s = _haframe_map(d, top, mapping, gamma, s_min)
        if not _is_psd(s):
            raise ValueError(f"{where}: min_similarity = {s_min} makes the similarity not positive semidefinite; "
                             "use a larger value, or min_similarity=None to search for the smallest that works")
        return s, s_min
    if isinstance(candidates, bool) or not isinstance(candidates, numbers.Integral) or candidates < 1:
        raise ValueError(f"{where}: candidates must be an int >= 1, got {candidates!r}")
    grid = np.linspace(-1.0 / (c - 1), -1.0, int(candidates))
    ok = lambda i: _is_psd(_haframe_map(d, top, mapping, gamma, grid[i]))  # noqa: E731
    if ok(0):
        # S is affine in s_min and its smallest eigenvalue concave: the PSD candidates are a run from the first
        lo, hi = 0, len(grid) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        best = lo
    else:
        found = [i for i in range(1, len(grid)) if ok(i)]
        if not found:
            raise ValueError(f"{where}: no min_similarity between -1/(C-1) = {grid[0]:.4g} and -1 keeps the "
                             "similarity positive semidefinite; pass a larger min_similarity (e.g. 0), or use an "
                             "LCA distance")
        best = found[-1]
    s_min = float(grid[best])
    return _haframe_map(d, top, mapping, gamma, s_min), s_min


def haframe_weights(source: Source, dim: int | None = None, *, distance: str | None = None,
                    gamma: float = 1.0, mapping: str = "exponential", min_similarity: float | None = None,
                    candidates: int = 100, seed: int | None = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Hierarchy-Aware Frame: fixed classifier weights ``W`` with ``W W^T = S`` (Liang & Davis, ICCV 2023).

    ``S`` is :func:`haframe_similarity`. As in the authors' code, ``S = V Λ V^T``
    (eigenvalues of magnitude below ``1e-6`` set to 0), and

    .. math::

        W = V \\Lambda^{1/2} Q^\\top

    with ``Q`` (``dim × r``) orthonormal columns from the QR factorisation of a
    Gaussian matrix (a random rotation into ``dim`` dimensions), ``r`` the
    number of non-zero eigenvalues. Row ``i`` is the weight vector of class
    ``i``; ``w_i · w_j = S_ij`` (to the ``1e-6`` cut). Use it in
    :class:`taxosmooth.heads.FixedClassifier`.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
    dim : int, optional
        Feature width, ``>= r``; default ``C`` (the paper's: one feature per class).
    distance, gamma, mapping, min_similarity, candidates
        As in :func:`haframe_similarity`.
    seed : int or None, default 0
        Of the random rotation (``None``: fresh randomness); it does not change ``W W^T``.
    dtype : torch dtype, default float32

    Returns
    -------
    Tensor ``(C, dim)``.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> w = haframe_weights(tax, gamma=2.0, dtype=torch.float64)
    >>> s, s_min = haframe_similarity(tax, gamma=2.0)
    >>> w.shape, bool(torch.allclose(w @ w.T, torch.from_numpy(s), atol=1e-5))
    (torch.Size([4, 4]), True)
    """
    where = "haframe_weights"
    s, _ = haframe_similarity(source, distance, gamma=gamma, mapping=mapping, min_similarity=min_similarity,
                              candidates=candidates)
    w, v = _eigh(s)
    w[np.abs(w) < 1e-6] = 0.0
    rank = int(np.sum(w > 0))
    dim = s.shape[0] if dim is None else dim
    dim = _check_dim(dim, rank, where, "the HAFrame similarity")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.sqrt(2.0 / s.shape[0]) * rng.standard_normal((dim, rank)))
    out = (v[:, :rank] * np.sqrt(w[:rank])) @ q.T
    return torch.from_numpy(out).to(dtype)


def __dir__() -> list[str]:
    return list(__all__)
