"""Soft targets: hand-computed softmax of -beta d / s, mixing with the label, scales, user matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.distances import DISTANCE_KINDS, LCA_KINDS
from taxosmooth.distances import resolve_source
from taxosmooth.targets import resolve_scale, soft_targets


def softmax_loop(d: np.ndarray, beta: float, s: float) -> np.ndarray:
    """q_t(i) = exp(-beta d(t, i) / s) / sum_k exp(-beta d(t, k) / s), one entry at a time."""
    C = d.shape[0]
    q = np.zeros((C, C))
    for t in range(C):
        z = sum(math.exp(-beta * d[t, k] / s) for k in range(C))
        for i in range(C):
            q[t, i] = math.exp(-beta * d[t, i] / s) / z
    return q


def test_seed_targets_by_hand():
    tax = seed_taxonomy()  # horse, zebra, whale, shark; lca_height from horse: 0, 1, 2, 2; max 2
    q = soft_targets(tax, beta=2.0)
    assert q.dtype == torch.float32 and q.shape == (4, 4)
    # s = max d = 2, so the exponents are -beta * d / 2 = 0, -1, -2, -2
    z = 1 + math.exp(-1) + 2 * math.exp(-2)
    expected = [1 / z, math.exp(-1) / z, math.exp(-2) / z, math.exp(-2) / z]
    np.testing.assert_allclose(q[0].double().numpy(), expected, rtol=1e-6)
    h, zb, w = (tax.class_index(n) for n in ("horse", "zebra", "whale"))
    assert q[h, zb] > q[h, w]  # zebra gets more of horse's mass than whale
    # path_length from horse: 0, 2, 4, 4, scale None: exponents 0, -2, -4, -4 at beta 1
    q = soft_targets(tax, beta=1.0, distance="path_length", scale=None, dtype=torch.float64)
    z = 1 + math.exp(-2) + 2 * math.exp(-4)
    np.testing.assert_allclose(q[0].numpy(), [1 / z, math.exp(-2) / z, math.exp(-4) / z, math.exp(-4) / z])


def test_seed_mix_by_hand():
    tax = seed_taxonomy()
    q = soft_targets(tax, beta=2.0, mix=0.25, dtype=torch.float64)
    z = 1 + math.exp(-1) + 2 * math.exp(-2)
    base = np.array([1, math.exp(-1), math.exp(-2), math.exp(-2)]) / z
    expected = 0.25 * base + 0.75 * np.array([1, 0, 0, 0])
    np.testing.assert_allclose(q[0].numpy(), expected)
    # mix 0: the one-hot label; mix 1: the plain soft targets
    np.testing.assert_array_equal(soft_targets(tax, 2.0, mix=0.0), torch.eye(4))
    np.testing.assert_array_equal(soft_targets(tax, 2.0, mix=1.0), soft_targets(tax, 2.0))


def test_beta_limits():
    tax = seed_taxonomy()
    np.testing.assert_allclose(soft_targets(tax, 0.0), torch.full((4, 4), 0.25))
    sharp = soft_targets(tax, 1e4, dtype=torch.float64)
    np.testing.assert_allclose(sharp.numpy(), np.eye(4), atol=1e-300)


@given(random_taxonomies(max_nodes=30, weighted=True), st.sampled_from(DISTANCE_KINDS),
       st.floats(0, 20), st.sampled_from(["max", None, 0.5, 3.0]), st.one_of(st.none(), st.floats(0, 1)))
def test_targets_match_loop_and_rows_sum_to_one(tax, kind, beta, scale, mix):
    q = soft_targets(tax, beta, distance=kind, scale=scale, mix=mix, dtype=torch.float64).numpy()
    d = ts.class_distances(tax, kind)
    s = {"max": d.max() if d.max() > 0 else 1.0, None: 1.0}.get(scale, scale)
    expected = softmax_loop(d, beta, s)
    if mix is not None:
        expected = mix * expected + (1 - mix) * np.eye(len(d))
    np.testing.assert_allclose(q, expected, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(q >= 0)
    # every row is largest at its own class and non-increasing in the distance
    for t in range(len(d)):
        assert q[t, t] == q[t].max()
        order = np.argsort(d[t], kind="stable")
        assert np.all(np.diff(q[t, order]) <= 1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_do_not_overflow(dtype):
    tax = seed_taxonomy()
    q = soft_targets(tax, beta=1e6, scale=None, dtype=dtype)
    assert q.dtype == dtype and torch.isfinite(q).all()
    torch.testing.assert_close(q.float(), torch.eye(4))


def test_user_matrix_source():
    d = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]], float)
    q = soft_targets(d, beta=1.5, scale=None, dtype=torch.float64)
    np.testing.assert_allclose(q.numpy(), softmax_loop(d, 1.5, 1.0))
    # a torch tensor or nested lists work the same; a distance kind does not apply to a matrix: refused
    np.testing.assert_array_equal(soft_targets(torch.tensor(d), 1.5, scale=None, dtype=torch.float64), q)
    np.testing.assert_array_equal(soft_targets(d.tolist(), 1.5, scale=None, dtype=torch.float64), q)
    with pytest.raises(ValueError, match="distance='path_length' applies to a Taxonomy; a matrix is used as given"):
        soft_targets(d, 1.5, distance="path_length")
    # asymmetric user distances are allowed (row t uses d[t, :])
    a = np.array([[0, 1], [5, 0]], float)
    np.testing.assert_allclose(soft_targets(a, 1.0, scale=None, dtype=torch.float64).numpy(), softmax_loop(a, 1, 1))
    # all-zero distances: scale "max" falls back to 1, targets are uniform
    np.testing.assert_allclose(soft_targets(np.zeros((3, 3)), 5.0), torch.full((3, 3), 1 / 3))


@pytest.mark.parametrize(
    "matrix, match",
    [
        (np.zeros((2, 3)), r"square \(C, C\), got shape \(2, 3\)"),
        (np.zeros(4), r"got shape \(4,\)"),
        (np.zeros((0, 0)), "empty"),
        (np.array([[0, np.nan], [1, 0]]), r"distance matrix\[0, 1\] is nan"),
        (np.array([[0, 1], [np.inf, 0]]), r"distance matrix\[1, 0\] is inf"),
        (np.array([[0, 1], [-2, 0]]), r"distance matrix\[1, 0\] = -2.0 is negative"),
        (np.array([[0, 1], [1, 0.5]]), r"distance matrix\[1, 1\] = 0.5; the diagonal must be zero"),
    ],
)
def test_user_matrix_validation_names_the_entry(matrix, match):
    with pytest.raises(ValueError, match=match):
        soft_targets(matrix, beta=1.0)


def test_user_matrix_not_numeric():
    with pytest.raises(TypeError, match="numeric"):
        soft_targets([["a", "b"], ["c", "d"]], beta=1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(beta=-1.0), ValueError, "beta must be finite and >= 0, got -1.0"),
        (dict(beta=float("nan")), ValueError, "beta"),
        (dict(beta=float("inf")), ValueError, "beta"),
        (dict(beta="2"), TypeError, "beta must be a real number"),
        (dict(beta=True), TypeError, "beta"),
        (dict(beta=1.0, mix=1.5), ValueError, r"mix must be in \[0, 1\], got 1.5"),
        (dict(beta=1.0, mix=-0.1), ValueError, "mix"),
        (dict(beta=1.0, mix=float("nan")), ValueError, "mix"),
        (dict(beta=1.0, scale="mean"), ValueError, "scale must be 'max', None or a positive number, got 'mean'"),
        (dict(beta=1.0, scale=0.0), ValueError, "scale must be finite and > 0"),
        (dict(beta=1.0, scale=-2), ValueError, "scale"),
        (dict(beta=1.0, distance="hops"), ValueError, "unknown distance 'hops'"),
    ],
)
def test_argument_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        soft_targets(seed_taxonomy(), **kwargs)


def test_resolve_scale_and_resolve_source():
    assert resolve_scale("max", 4.0) == 4.0 and resolve_scale("max", 0.0) == 1.0
    assert resolve_scale(None, 4.0) == 1.0 and resolve_scale(2, 4.0) == 2.0
    tax = seed_taxonomy()
    np.testing.assert_array_equal(resolve_source(tax, "path_length").dense(), ts.class_distances(tax, "path_length"))
    user = np.array([[0.0, 2.0], [2.0, 0.0]])
    out = resolve_source(user).dense()
    np.testing.assert_array_equal(out, user)
    assert not out.flags.writeable
    user[0, 1] = 9  # a copy: changing the user's array later changes nothing
    assert out[0, 1] == 2.0


@given(random_taxonomies(max_nodes=30, weighted=True), st.sampled_from(DISTANCE_KINDS))
def test_max_pair_distance_matches_dense(tax, kind):
    d = ts.class_distances(tax, kind)
    src = resolve_source(tax, kind)
    assert src.max_distance() == pytest.approx(d.max())
    assert src.structured == (kind in LCA_KINDS)
    if kind in LCA_KINDS:
        assert src.max_distance() == d.max()


def test_single_class_targets():
    tax = ts.Taxonomy.from_edges([("r", "x")])
    np.testing.assert_array_equal(soft_targets(tax, 3.0), [[1.0]])


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_source_keeps_its_device(device):
    d = torch.tensor([[0.0, 1.0], [1.0, 0.0]], device=device, requires_grad=True)
    q = soft_targets(d, beta=1.0, scale=None, dtype=torch.float64)
    assert q.device == d.device
    e = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(q.cpu().numpy(), [[e, 1 - e], [1 - e, e]])
    assert soft_targets(seed_taxonomy(), 1.0).device.type == "cpu"


def test_integer_dtype_is_refused_not_zeroed(seed_tax):
    with pytest.raises(TypeError, match="floating-point"):
        ts.soft_targets(seed_tax, 1.0, dtype=torch.int64)
    with pytest.raises(TypeError, match="floating-point"):
        ts.cost_matrix(seed_tax, dtype=torch.int64)


def test_one_element_tensors_are_accepted_as_numbers(seed_tax):
    expected = ts.soft_targets(seed_tax, 2.0, mix=0.5)
    got = ts.soft_targets(seed_tax, torch.tensor(2.0), mix=np.array(0.5))
    torch.testing.assert_close(got, expected)
    with pytest.raises(TypeError, match="beta"):
        ts.soft_targets(seed_tax, torch.tensor([1.0, 2.0]))


# ----------------------------------------------------------------------------- choosing beta
@given(random_taxonomies(max_nodes=30, weighted=True), st.sampled_from(DISTANCE_KINDS), st.floats(0.05, 0.95),
       st.sampled_from(["max", None]), st.sampled_from([None, 0.5]))
def test_beta_for_mass_hits_the_mass(tax, kind, frac, scale, mix):
    """The mean diagonal of soft_targets(beta_for_mass(m)) is m, for every source kind (between the
    uniform targets of beta = 0 and the one-hot limit: distinct classes of a tree are never at distance 0)."""
    C = tax.num_classes
    if C < 2:
        return
    low = (1 / C) if mix is None else (1 - mix) + mix / C
    mass = low + frac * (1.0 - low)
    beta = ts.beta_for_mass(tax, mass, kind, scale, mix)
    got = float(soft_targets(tax, beta, kind, scale, mix, dtype=torch.float64).diagonal().mean())
    assert got == pytest.approx(mass, rel=1e-9, abs=1e-9)
    # a matrix source gives the same beta as the taxonomy it came from
    d = ts.class_distances(tax, kind)
    assert ts.beta_for_mass(d, mass, scale=scale, mix=mix) == pytest.approx(beta, rel=1e-7)


def test_beta_for_mass_refuses_unreachable_masses(seed_tax):
    with pytest.raises(ValueError, match=r"mass must lie strictly between 0.25 \(beta = 0\) and 1 \(beta -> inf\)"):
        ts.beta_for_mass(seed_tax, 0.2)
    with pytest.raises(ValueError, match="strictly between"):
        ts.beta_for_mass(seed_tax, 1.0)
    # zero distances off the diagonal cap the reachable mass
    d = np.array([[0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=float)
    with pytest.raises(ValueError, match=r"and 0.666667 \(beta -> inf\)"):
        ts.beta_for_mass(d, 0.8)
    with pytest.raises(TypeError, match="mass must be a number"):
        ts.beta_for_mass(seed_tax, "0.5")
    with pytest.raises(ValueError, match="distance='lca_height' applies to a Taxonomy"):
        ts.beta_for_mass(d, 0.5, distance="lca_height")


def ring_soft_targets(tax, beta: float, distance: str, mix: float | None = None) -> np.ndarray:
    """Soft-target masses per ring, for every target id: float64 ``(num_nodes, K+1)`` (``scale="max"``), on the
    ring layout that :func:`beta_for_mass` solves on.

    Ring 0 of target id ``v`` is its subtree (one merged outcome); ring ``k >= 1`` the classes whose
    LCA with ``v`` is the ``k``-th ancestor of ``v``. Column 0 is the mass of ring 0 as a whole,
    column ``k >= 1`` the mass of *each* class of ring ``k``.
    """
    from taxosmooth.targets import _ring_layout

    src = resolve_source(tax, distance)
    ring, d = _ring_layout(src)
    e = np.exp(-beta * d / resolve_scale("max", src.max_distance()))
    e[:, 0] = 1.0  # ring 0 is at distance 0
    counts = ring.copy()
    counts[:, 0] = 1.0  # ring 0 is one outcome
    q = e / (e * counts).sum(axis=1, keepdims=True)
    q[ring == 0] = 0.0
    if mix is not None:
        q *= mix
        q[:, 0] += 1.0 - mix
    return q


@given(random_taxonomies(max_nodes=25), st.sampled_from(["lca_height", "lca_depth_complement"]),
       st.floats(0.0, 6.0), st.sampled_from([None, 0.4]))
def test_soft_targets_are_constant_on_the_rings_of_the_lca(tax, kind, beta, mix):
    """The dense rows equal the structured form (one value per ring: the classes whose LCA with the target
    is its k-th ancestor) on beta_for_mass's ring layout; coarse labels' rows sum to 1 too."""
    q = soft_targets(tax, beta, kind, mix=mix, dtype=torch.float64).numpy()
    r = ring_soft_targets(tax, beta, kind, mix=mix)
    assert r.shape == (tax.num_nodes, tax.max_depth + 1)
    for t, name in enumerate(tax.classes):
        path = (name,) + tax.ancestors(name)
        for j, other in enumerate(tax.classes):
            k = path.index(tax.lca(name, other))
            assert r[t, k] == pytest.approx(q[t, j], rel=1e-12, abs=1e-15)
    # every row is a distribution over its outcomes (ring 0 counted once)
    for v in range(tax.num_nodes):
        name = tax.target_names[v]
        path = (name,) + tax.ancestors(name)
        sizes = [len(tax.leaves_under(a)) for a in path]
        ring = [1] + [b - a for a, b in zip(sizes, sizes[1:])]
        assert sum(r[v, k] * ring[k] for k in range(len(path))) == pytest.approx(1.0)


def test_the_module_shows_what_the_library_uses():
    """The ring form lives in the tests (its only user); the module shows the functions users call."""
    assert sorted(dir(ts.targets)) == ["beta_for_mass", "resolve_scale", "soft_targets"]
    assert not hasattr(ts.targets, "ring_soft_targets")
