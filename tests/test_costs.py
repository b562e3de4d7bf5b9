"""Cost matrices: identity, power, normalize, callables; structured node costs vs the dense matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.costs import cost_matrix, node_costs
from taxosmooth.distances import DISTANCE_KINDS, LCA_KINDS


def test_seed_costs_by_hand():
    tax = seed_taxonomy()  # horse, zebra, whale, shark
    np.testing.assert_array_equal(cost_matrix(tax)[0], [0, 1, 2, 2])
    np.testing.assert_array_equal(cost_matrix(tax, transform="normalize")[0], [0, 0.5, 1, 1])
    np.testing.assert_array_equal(cost_matrix(tax, power=2)[0], [0, 1, 4, 4])
    np.testing.assert_array_equal(cost_matrix(tax, "path_length", power=0.5, dtype=torch.float64)[0],
                                  [0, np.sqrt(2), 2, 2])
    np.testing.assert_array_equal(cost_matrix(tax, "path_length", power=2, transform="normalize")[0],
                                  [0, 0.25, 1, 1])
    np.testing.assert_array_equal(cost_matrix(tax, transform=lambda d: 10 * d)[0], [0, 10, 20, 20])
    for kind in DISTANCE_KINDS:
        c = cost_matrix(tax, kind)
        assert c.dtype == torch.float32
        assert c[0, 1] < c[0, 2]  # horse -> zebra costs less than horse -> whale
        assert torch.all(torch.diagonal(c) == 0)


def test_node_costs_seed_by_hand():
    tax = seed_taxonomy()  # nodes: animal, mammal, horse, zebra, sea, whale, shark
    np.testing.assert_array_equal(node_costs(tax), [2, 1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(node_costs(tax, transform="normalize", power=2), [1, 0.25, 0, 0, 0.25, 0, 0])


@given(random_taxonomies(max_nodes=30, weighted=True), st.sampled_from(DISTANCE_KINDS),
       st.sampled_from([0.5, 1.0, 2.0, 3.0]),
       st.sampled_from(["identity", "normalize", None, "log1p", "square_plus"]))
def test_cost_matrix_is_f_of_distance(tax, kind, power, transform):
    funcs = {"log1p": np.log1p, "square_plus": lambda x: x * x + x}
    fn = funcs.get(transform, transform)
    d = ts.class_distances(tax, kind)
    c = cost_matrix(tax, kind, transform=fn, power=power, dtype=torch.float64).numpy()
    C = len(d)
    expected = np.zeros((C, C))
    m = max(d[t, j] ** power for t in range(C) for j in range(C))
    for t in range(C):
        for j in range(C):
            x = d[t, j] ** power
            if transform == "normalize":
                x = x / m if m > 0 else x
            elif transform in funcs:
                x = float(funcs[transform](x))
            expected[t, j] = x
    np.testing.assert_allclose(c, expected, rtol=1e-12, atol=1e-15)
    assert np.all(np.diag(c) == 0) and np.all(c >= 0)
    if transform == "normalize" and C > 1:
        assert c.max() == pytest.approx(1.0)


@given(random_taxonomies(max_nodes=30), st.sampled_from(LCA_KINDS), st.sampled_from([0.5, 1.0, 2.0]),
       st.sampled_from(["identity", "normalize", "expm1"]))
def test_node_costs_agree_with_dense_through_lca(tax, kind, power, transform):
    fn = np.expm1 if transform == "expm1" else transform
    table = node_costs(tax, kind, transform=fn, power=power)
    assert table.shape == (tax.num_nodes,) and table.dtype == np.float64
    np.testing.assert_array_equal(table[tax.compiled.is_leaf], 0)
    dense = cost_matrix(tax, kind, transform=fn, power=power, dtype=torch.float64).numpy()
    np.testing.assert_allclose(table[ts.lca_matrix(tax)], dense, rtol=1e-12)


def test_user_matrix_costs():
    d = np.array([[0, 1, 4], [1, 0, 2], [4, 2, 0]], float)
    np.testing.assert_array_equal(cost_matrix(d, transform="normalize"), torch.tensor(d / 4, dtype=torch.float32))
    np.testing.assert_array_equal(cost_matrix(torch.tensor(d), power=2, dtype=torch.float64), torch.tensor(d**2))
    with pytest.raises(ValueError, match=r"cost matrix|distance matrix\[2, 2\]"):
        cost_matrix(np.array([[0, 1, 4], [1, 0, 2], [4, 2, 1]]))
    with pytest.raises(ValueError, match=r"distance matrix\[0, 2\] = -4.0 is negative"):
        cost_matrix(np.array([[0, 1, -4], [1, 0, 2], [4, 2, 0]]))
    with pytest.raises(ValueError, match=r"square"):
        cost_matrix(np.zeros((2, 3)))
    np.testing.assert_array_equal(cost_matrix(np.zeros((2, 2)), transform="normalize"), torch.zeros(2, 2))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(power=0), ValueError, "power must be finite and > 0"),
        (dict(power=-1.0), ValueError, "power"),
        (dict(power="2"), TypeError, "power"),
        (dict(transform="log"), ValueError, r"transform must be one of \('identity', 'normalize'\) or a callable \(or None\), got 'log'"),
        (dict(transform=lambda d: d - 1), ValueError, r"transform gave -1.0 for node \(\d+,\) \(distance 0.0\)"),
        (dict(transform=lambda d: d / 0), ValueError, r"transform gave (nan|inf)"),
        (dict(transform=lambda d: d.sum()), ValueError, "transform must be elementwise"),
        (dict(transform=lambda d: d + 1), ValueError, r"transform\(0\) must be 0: a correct prediction costs nothing"),
        (dict(distance="hops"), ValueError, "unknown distance 'hops'"),
    ],
)
def test_cost_argument_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        with np.errstate(all="ignore"):
            cost_matrix(seed_taxonomy(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(distance="path_length"), "'path_length' is not a function of the LCA node"),
        (dict(distance="hops"), "unknown distance 'hops'"),
        (dict(transform=lambda d: d + 1), r"transform\(0\) must be 0"),
        (dict(transform=lambda d: -d - 1), r"transform gave -3.0 for node \(0,\) \(distance 2.0\)"),
        (dict(power=0), "power"),
    ],
)
def test_node_costs_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        node_costs(seed_taxonomy(), **kwargs)


def test_single_class_costs():
    tax = ts.Taxonomy.from_edges([("r", "x")])
    np.testing.assert_array_equal(cost_matrix(tax, transform="normalize"), [[0.0]])
    table = node_costs(tax, transform="normalize")
    assert table.shape == (2,) and table[tax.node_index("x")] == 0.0


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_source_keeps_its_device(device):
    d = torch.tensor([[0.0, 2.0], [2.0, 0.0]], device=device)
    c = cost_matrix(d, transform="normalize", dtype=torch.float16)
    assert c.device == d.device and c.dtype == torch.float16
    np.testing.assert_array_equal(c.cpu().float().numpy(), [[0, 1], [1, 0]])


def test_normalized_costs_of_a_huge_power_are_computed_not_refused():
    """d ** 1000 overflows float64 for d >= 2, but normalised it is (d / max d) ** 1000, in [0, 1] (oracle: the
    same power in exact rational arithmetic, rounded once)."""
    from fractions import Fraction

    tax = ts.Taxonomy.from_paths(["r/a/b/c/d/e", "r/a/b/x", "r/y"])
    d = ts.class_distances(tax, "path_length")
    top = int(d.max())
    want = np.vectorize(lambda v: float(Fraction(int(v), top) ** 1000))(d)
    for power, source in ((1000, tax), (1000, d)):
        got = cost_matrix(source, "path_length" if source is tax else None, power=power, transform="normalize",
                          dtype=torch.float64).numpy()
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(node_costs(tax, "lca_height", power=1000, transform="normalize"),
                               [float(Fraction(int(h), int(tax.compiled.height.max())) ** 1000)
                                for h in tax.compiled.height], rtol=1e-12)
    # without the normalisation the cost itself does not fit: still an error naming the entry
    with pytest.raises(ValueError, match=r"power=1000 overflows: distance 4.0 \*\* 1000 for entry \(0, 1\)"):
        cost_matrix(tax, "path_length", power=1000)
