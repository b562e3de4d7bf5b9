"""``taxosmooth.data``: the bundled files, and tree-shaped synthetic data (against a loop over the paths and the
tree's path lengths)."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.data import EXAMPLES, class_means, example_path, load_animals, make_tree_blobs


def test_the_bundled_files_are_package_data():
    for name in EXAMPLES:
        assert resources.files("taxosmooth.data").joinpath(name).is_file()
        assert example_path(name).is_file()
    assert ts.Taxonomy.load(example_path("animals.txt")) == load_animals()
    assert "data" in ts.__all__ and "data" in dir(ts) and set(dir(ts.data)) == set(ts.data.__all__)


def loop_means(tax, dim, seed, dtype=torch.float64):
    """The centres by a plain loop: each class walks up to the root, adding sqrt(w(v)) z_v of every node but the root."""
    c = tax.compiled
    z = torch.randn(c.num_nodes, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    out = torch.zeros(tax.num_classes, dim, dtype=dtype)
    for k in range(tax.num_classes):
        v = int(c.class_node[k])
        while c.parent[v] >= 0:
            out[k] += math.sqrt(float(c.weight[v])) * z[v]
            v = int(c.parent[v])
    return out


@given(tax=random_taxonomies(min_nodes=1, max_nodes=25, weighted=True), seed=st.integers(0, 2**32),
       dim=st.integers(1, 5))
def test_class_means_are_the_sums_along_the_paths(tax, seed, dim):
    got = class_means(tax, dim, seed=seed, dtype=torch.float64)
    assert got.shape == (tax.num_classes, dim) and got.dtype == torch.float64
    torch.testing.assert_close(got, loop_means(tax, dim, seed), rtol=1e-12, atol=1e-12)


def test_determinism_by_seed_and_generators():
    tax = load_animals()
    a, b = make_tree_blobs(tax, 3, seed=5), make_tree_blobs(tax, 3, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(make_tree_blobs(tax, 3, seed=6)[0], a[0])
    assert torch.equal(class_means(tax, seed=5), class_means(tax, seed=5))
    assert not torch.equal(class_means(tax, seed=5), class_means(tax, seed=6))
    # drawn in the documented order: the centres first, then the noise
    x, y = make_tree_blobs(tax, 3, noise=0.0, seed=5)
    assert torch.equal(x, class_means(tax, seed=5)[y])
    g = torch.Generator().manual_seed(5)
    mu = class_means(tax, seed=g)
    x1, _ = make_tree_blobs(tax, 3, means=mu, seed=g)
    assert torch.equal(x1, a[0])  # the same draws as one call with seed=5
    x2, _ = make_tree_blobs(tax, 3, means=mu, seed=g)  # the generator moved on: new samples, same centres
    assert not torch.equal(x1, x2)


def test_shapes_dtypes_and_labels():
    tax = load_animals()
    x, y = make_tree_blobs(tax, 4, dim=7)
    assert x.shape == (160, 7) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [c for c in range(40) for _ in range(4)]
    x, y = make_tree_blobs(tax, 2, dtype=torch.float64)
    assert x.shape == (80, 32) and x.dtype == torch.float64
    mu = class_means(tax, 5, dtype=torch.float64)
    x, _ = make_tree_blobs(tax, 1, means=mu, dim=5, dtype=torch.float64)
    assert x.shape == (40, 5) and x.dtype == torch.float64
    one = ts.Taxonomy.from_edges([("root", "only")])
    assert class_means(one, 3).shape == (1, 3) and bool((class_means(one, 3) != 0).all())


@pytest.mark.parametrize("weighted", [False, True])
def test_squared_distances_follow_the_tree(weighted):
    """E‖μ_a − μ_b‖² = dim · path length: every pair within 6 standard deviations (each entry of μ_a − μ_b is
    N(0, d), so the mean of dim squares has standard deviation d · sqrt(2 / dim))."""
    if weighted:
        rng = np.random.default_rng(0)
        edges = [(a, b, float(rng.choice([0.5, 1.0, 2.0]))) for a, b, _ in load_animals().edges()]
        tax = ts.Taxonomy.from_edges(edges)
    else:
        tax = load_animals()
    dim = 4096
    mu = class_means(tax, dim, seed=3, dtype=torch.float64)
    sq = ((mu[:, None, :] - mu[None, :, :]) ** 2).mean(-1).numpy()
    d = np.asarray(ts.class_distances(tax, "path_length"), dtype=np.float64)
    off = ~np.eye(tax.num_classes, dtype=bool)
    assert np.all(np.abs(sq - d)[off] <= 6 * d[off] * math.sqrt(2 / dim))
    # classes under the same parent are closer than classes far apart
    horse, zebra, whale, shark = (tax.class_index(n) for n in ("horse", "zebra", "whale", "shark"))
    if not weighted:
        assert sq[horse, zebra] < sq[horse, whale] < sq[horse, shark]
    # samples: dim · (d + 2 noise²) on average over pairs of samples
    x, y = make_tree_blobs(tax, 20, means=mu.to(torch.float64), noise=0.5, seed=4)
    per = x.reshape(tax.num_classes, 20, dim)
    a, b = per[horse], per[shark]
    got = ((a[:, None, :] - b[None, :, :]) ** 2).mean(-1).mean().item()
    expect = sq[horse, shark] + 2 * 0.5**2
    assert abs(got - expect) <= 0.02 * expect


def test_sibling_centres_are_closer_than_distant_ones_on_average():
    """Over many seeds of a small tree with a few dims: siblings (path 2) nearer than cousins (path 4)."""
    tax = seed_taxonomy()
    sib, far = [], []
    for seed in range(200):
        mu = class_means(tax, 4, seed=seed, dtype=torch.float64)
        sib.append(((mu[0] - mu[1]) ** 2).sum().item())
        far.append(((mu[0] - mu[2]) ** 2).sum().item())
    assert np.mean(sib) < np.mean(far)
    assert np.mean(sib) == pytest.approx(2 * 4, rel=0.2) and np.mean(far) == pytest.approx(4 * 4, rel=0.2)


def test_bad_input_names_the_argument():
    tax = seed_taxonomy()
    with pytest.raises(TypeError, match="make_tree_blobs: taxonomy must be a Taxonomy, got dict"):
        make_tree_blobs({"a": ["b"]})
    with pytest.raises(TypeError, match="class_means: taxonomy must be a Taxonomy"):
        class_means("animals.csv")
    for kw, msg in [({"samples_per_class": 0}, "samples_per_class must be a positive int, got 0"),
                    ({"samples_per_class": True}, "samples_per_class must be a positive int, got True"),
                    ({"dim": 0}, "dim must be a positive int, got 0"),
                    ({"dim": 2.0}, "dim must be a positive int, got 2.0"),
                    ({"noise": -1}, "noise must be a finite number >= 0, got -1"),
                    ({"noise": float("nan")}, "noise must be a finite number >= 0, got nan"),
                    ({"seed": -1}, r"seed must be an int in \[0, 2\*\*64\) or a torch.Generator, got -1"),
                    ({"seed": 1.5}, "seed must be an int"),
                    ({"dtype": torch.int64}, "dtype must be a floating point torch.dtype, got torch.int64"),
                    ({"means": torch.zeros(3, 2)}, r"means must have shape \(C, dim\) = \(4, dim\).*got shape \(3, 2\)"),
                    ({"means": torch.zeros(4, 2), "dim": 3}, "dim = 3 but means has 2 columns"),
                    ({"means": torch.zeros(4, 2), "dtype": torch.float64}, "dtype = torch.float64 but means has dtype torch.float32"),
                    ({"means": torch.tensor([[0.0, 1.0]] * 3 + [[0.0, math.inf]])}, r"means\[3, 1\] is inf")]:
        with pytest.raises(ValueError, match=msg):
            make_tree_blobs(tax, **({"samples_per_class": 2} | kw))
    with pytest.raises(TypeError, match="means must be a floating point tensor .* got a torch.int64 tensor"):
        make_tree_blobs(tax, means=torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="got list"):
        make_tree_blobs(tax, means=[[0.0]] * 4)
