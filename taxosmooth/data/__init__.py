"""Example data: the bundled animal taxonomy, and synthetic features shaped by any taxonomy.

**Bundled files.** ``animals.csv`` (edge list) and ``animals.txt`` (one
root-to-leaf path per line) hold the same small animal taxonomy: 40 classes
(horse, zebra, whale, shark, ...) under ``animal``, with common names and ranks
after the Linnaean classification (simplified). Class depths range from 2 to 5,
and two internal nodes (``amphibian``, ``arthropod``) have a single child.

>>> from taxosmooth.data import load_animals
>>> tax = load_animals()
>>> tax.num_classes, tax.lca("horse", "whale"), tax.lca("horse", "shark")
(40, 'mammal', 'vertebrate')

**Tree-shaped synthetic data** (:func:`class_means`, :func:`make_tree_blobs`),
for examples, tests and quick experiments: Gaussian blobs, one per class, whose
centres are sums of random vectors along the tree, so that related classes
look alike. Every non-root node ``v`` draws a vector ``z_v ~ N(0, w(v) I)`` of
``dim`` entries (``w(v)`` the weight of the edge into ``v``: 1 unless the
taxonomy is weighted); the centre of class ``c`` is the sum over its path,

.. math:: \\mu_c = \\sum_{v \\in \\mathrm{path}(r \\to c),\\ v \\ne r} z_v,

and a sample of class ``c`` is ``x = μ_c + noise · ε`` with ``ε ~ N(0, I)``.
The vectors above the lowest common ancestor cancel in ``μ_a − μ_b``, so the
expected squared distance between two centres is ``dim`` times their tree path
length (:func:`taxosmooth.class_distances` with ``"path_length"``):

.. math:: \\mathbb{E}\\,\\lVert \\mu_a - \\mu_b \\rVert^2 = \\mathrm{dim} \\cdot d_{\\mathrm{path}}(a, b),
          \\qquad \\mathbb{E}\\,\\lVert x_a - x_b \\rVert^2 = \\mathrm{dim} \\cdot \\big(d_{\\mathrm{path}}(a, b) + 2\\,\\mathrm{noise}^2\\big).

Siblings are 2 edges apart, classes in different top-level groups at least 4:
``noise = 1`` is the spread of one edge.
"""

from __future__ import annotations

import math
import numbers
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from taxosmooth.taxonomy import Taxonomy

__all__ = ["EXAMPLES", "example_path", "load_animals", "class_means", "make_tree_blobs"]

#: the bundled example files
EXAMPLES = ("animals.csv", "animals.txt")


def example_path(name: str = "animals.csv") -> Path:
    """Path of a bundled example file (one of :data:`EXAMPLES`)."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example file {name!r}; choose one of {', '.join(EXAMPLES)}")
    return Path(str(resources.files(__name__).joinpath(name)))


def load_animals(**options: Any) -> Taxonomy:
    """The bundled animal taxonomy as a :class:`~taxosmooth.Taxonomy` (options as in ``Taxonomy.load``)."""
    from taxosmooth.taxonomy import Taxonomy

    return Taxonomy.load(example_path("animals.csv"), **options)


# ---------------------------------------------------------------------- synthetic data
def _check_taxonomy(taxonomy, where: str) -> Taxonomy:
    from taxosmooth.taxonomy import Taxonomy

    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"{where}: taxonomy must be a Taxonomy, got {type(taxonomy).__name__}")
    return taxonomy


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _generator(seed) -> torch.Generator:
    """A CPU generator: a new one seeded with ``seed``, or ``seed`` itself (a Generator, used and advanced)."""
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError(f"seed must be a CPU torch.Generator (the data are drawn on the CPU), got one on {seed.device}")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64) or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


def _float_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point torch.dtype, got {dtype!r}")
    return dtype


def class_means(taxonomy: Taxonomy, dim: int = 32, *, seed: int | torch.Generator = 0,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The class centres ``μ_c``: sums of random node vectors along each class's path.

    ``z_v ~ N(0, w(v) I_dim)`` for every node ``v`` but the root (``w(v)`` the
    weight of the edge into ``v``), drawn in node-id order (depth-first) from
    the generator; ``μ_c = Σ_{v on the path root → c, v ≠ root} z_v`` (see the
    module docstring: ``E‖μ_a − μ_b‖² = dim · d_path(a, b)``). O(nodes · dim),
    one step per depth level.

    Parameters
    ----------
    taxonomy : Taxonomy
    dim : int, default 32
        Entries of each vector.
    seed : int or torch.Generator, default 0
        An int seeds a new generator (the same taxonomy and seed always give
        the same centres); a CPU ``torch.Generator`` is used as it is, and advanced.
    dtype : floating torch.dtype, default torch.float32

    Returns
    -------
    Tensor (C, dim)
        Row ``c`` is the centre of class ``c`` (class order), on the CPU.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> mu = class_means(tax, dim=20000, seed=0, dtype=torch.float64)
    >>> sq = lambda a, b: float(((mu[tax.class_index(a)] - mu[tax.class_index(b)]) ** 2).mean())
    >>> round(sq("horse", "zebra"), 1), round(sq("horse", "whale"), 1)   # path lengths 2 and 4
    (2.0, 4.0)
    """
    tax = _check_taxonomy(taxonomy, "class_means")
    dim = _positive_int(dim, "dim")
    dtype = _float_dtype(dtype)
    g = _generator(seed)
    c = tax.compiled
    node = torch.randn(c.num_nodes, dim, generator=g, dtype=dtype)
    node *= torch.from_numpy(np.sqrt(c.weight)).to(dtype)[:, None]  # the root's weight is 0: its vector is 0
    parent = torch.from_numpy(np.maximum(c.parent, 0))
    # top down, one depth level at a time: the centre of v is its parent's plus z_v
    for level in c.levels[1:]:
        idx = torch.tensor(level)  # copies: the compiled arrays are read-only
        node[idx] += node[parent[idx]]
    return node[torch.tensor(c.class_node)]


def make_tree_blobs(taxonomy: Taxonomy, samples_per_class: int = 10, *, dim: int | None = None, noise: float = 1.0,
                    seed: int | torch.Generator = 0, means: torch.Tensor | None = None,
                    dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels whose class structure follows the taxonomy: one Gaussian blob per class.

    ``x = μ_y + noise · ε``, ``ε ~ N(0, I_dim)``, with the centres ``μ`` of
    :func:`class_means` (drawn first, from the same generator, unless given as
    ``means``). Expected squared distances: ``dim · (d_path(a, b) + 2 noise²)``
    between samples of classes ``a`` and ``b`` (module docstring). A task with
    fixed centres and fresh samples: draw the centres once with
    :func:`class_means`, then pass ``means=`` and a new seed for each split.

    Parameters
    ----------
    taxonomy : Taxonomy
    samples_per_class : int, default 10
    dim : int, optional
        Entries of each feature vector; default 32, or the width of ``means``
        (a different ``dim`` is an error).
    noise : float >= 0, default 1.0
        Standard deviation of each entry of the noise, in units of one edge of
        weight 1 (siblings' centres are ``sqrt(2 · dim)`` apart on average).
    seed : int or torch.Generator, default 0
        An int seeds a new generator; a CPU ``torch.Generator`` is used as it is,
        and advanced (two calls with one generator draw different samples).
    means : Tensor (C, dim), optional
        The class centres (e.g. from :func:`class_means`); finite, floating point.
    dtype : floating torch.dtype, optional
        Default float32, or the dtype of ``means`` (a different dtype is an error).

    Returns
    -------
    x : Tensor (C · samples_per_class, dim)
    y : LongTensor (C · samples_per_class,)
        Class indices, grouped by class: ``samples_per_class`` of class 0, then
        of class 1, ... (shuffle with ``torch.randperm`` where order matters). On the CPU.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.data.load_animals()
    >>> x, y = make_tree_blobs(tax, samples_per_class=5, seed=0)
    >>> x.shape, y.shape, x.dtype, y[:7].tolist()
    (torch.Size([200, 32]), torch.Size([200]), torch.float32, [0, 0, 0, 0, 0, 1, 1])
    >>> mu = class_means(tax, dim=64, seed=1)                       # one task ...
    >>> x_train, y_train = make_tree_blobs(tax, 20, means=mu, seed=2)   # ... two splits of it
    >>> x_test, y_test = make_tree_blobs(tax, 50, means=mu, seed=3)
    >>> x_train.shape, x_test.shape
    (torch.Size([800, 64]), torch.Size([2000, 64]))
    """
    tax = _check_taxonomy(taxonomy, "make_tree_blobs")
    n = _positive_int(samples_per_class, "samples_per_class")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    g = _generator(seed)
    if means is None:
        mu = class_means(tax, 32 if dim is None else dim, seed=g, dtype=torch.float32 if dtype is None else dtype)
    else:
        if not isinstance(means, torch.Tensor) or not means.is_floating_point():
            what = f"a {means.dtype} tensor" if isinstance(means, torch.Tensor) else type(means).__name__
            raise TypeError(f"means must be a floating point tensor (C, dim), got {what}")
        if means.ndim != 2 or means.shape[0] != tax.num_classes:
            raise ValueError(f"means must have shape (C, dim) = ({tax.num_classes}, dim), one row per class, got "
                             f"shape {tuple(means.shape)}")
        if dim is not None and _positive_int(dim, "dim") != means.shape[1]:
            raise ValueError(f"dim = {dim} but means has {means.shape[1]} columns")
        if dtype is not None and _float_dtype(dtype) != means.dtype:
            raise ValueError(f"dtype = {dtype} but means has dtype {means.dtype}")
        bad = ~torch.isfinite(means)
        if bad.any():
            i, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"means[{i}, {j}] is {float(means[i, j])}; the centres must be finite")
        mu = means.detach().cpu()
    y = torch.arange(tax.num_classes).repeat_interleave(n)
    x = mu[y] + noise * torch.randn(y.shape[0], mu.shape[1], generator=g, dtype=mu.dtype)
    return x, y


def __dir__() -> list[str]:
    return list(__all__)
