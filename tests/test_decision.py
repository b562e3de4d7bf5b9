"""Conditional risk minimisation: against a brute-force loop, structured vs dense, 0/1 costs vs argmax."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth._ranking import rank_of, stable_topk
from taxosmooth.decision import CRMClassifier, conditional_risk, crm_predict

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def loop_risk(probs: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """R[b, j] = sum_i p[b, i] cost[i, j], one term at a time."""
    B, C = probs.shape
    out = np.zeros((B, C))
    for b in range(B):
        for j in range(C):
            out[b, j] = sum(probs[b, i] * cost[i, j] for i in range(C))
    return out


def loop_ranking(risk_row) -> list[int]:
    """Lowest cost first; equal costs by class index."""
    return sorted(range(len(risk_row)), key=lambda j: (risk_row[j], j))


def dyadic_probs(rng: np.random.Generator, B: int, C: int, total: int = 64) -> np.ndarray:
    """Probabilities that are multiples of 1/64: every sum below is exact, and zeros make ties."""
    counts = rng.multinomial(total, rng.dirichlet(np.full(C, 0.5)), size=B)
    return counts / total


def flat_taxonomy(C: int) -> ts.Taxonomy:
    """Root with C leaf children: every pair has LCA = root, so lca_height costs are 0/1."""
    return ts.Taxonomy.from_edges([("r", f"c{i}") for i in range(C)])


# ---------------------------------------------------------------------- hand-computed
def test_seed_example_by_hand():
    tax = seed_taxonomy()  # horse, zebra | whale, shark ; lca_height: siblings 1, across 2
    p = torch.tensor([[0.4, 0.0, 0.3, 0.3]], dtype=torch.float64)
    # horse: 0.3*2 + 0.3*2; zebra: 0.4*1 + 0.6*2; whale: 0.4*2 + 0.3*1; shark: same as whale
    expected = [[1.2, 1.6, 1.1, 1.1]]
    np.testing.assert_allclose(conditional_risk(p, tax).numpy(), expected)
    np.testing.assert_allclose(conditional_risk(p, ts.cost_matrix(tax, dtype=torch.float64)).numpy(), expected)
    assert crm_predict(p, tax).tolist() == [2]  # argmax says horse; whale and shark tie, whale has the lower index
    assert crm_predict(p, tax, k=4).tolist() == [[2, 3, 0, 1]]


def test_k1_shape_and_k_shape():
    tax = seed_taxonomy()
    p = torch.softmax(torch.randn(5, 4), 1)
    assert crm_predict(p, tax).shape == (5,)
    assert crm_predict(p, tax, k=1).dtype == torch.long
    assert crm_predict(p, tax, k=3).shape == (5, 3)


# ---------------------------------------------------------------------- oracle: the plain loop
@given(tax=random_taxonomies(max_nodes=25), seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["lca_height", "lca_depth_complement", "path_length"]))
def test_matches_loop_oracle_exactly(tax, seed, kind):
    rng = np.random.default_rng(seed)
    C = tax.num_classes
    probs = dyadic_probs(rng, 4, C)
    cost = ts.class_distances(tax, kind)
    oracle = loop_risk(probs, cost)
    p = torch.from_numpy(probs)
    risk = conditional_risk(p, tax, distance=kind)
    np.testing.assert_array_equal(risk.numpy(), oracle)  # exact: dyadic probabilities, integer costs
    ranking = crm_predict(p, tax, k=C, distance=kind)
    assert ranking.reshape(4, C).tolist() == [loop_ranking(r) for r in oracle]


# ---------------------------------------------------------------------- structured == dense
@given(
    tax=random_taxonomies(max_nodes=30),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["lca_height", "lca_depth_complement"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_structured_equals_dense_exact_ties(tax, seed, kind, dtype):
    """Exact data: identical costs, and therefore identical rankings with the tie rule."""
    rng = np.random.default_rng(seed)
    C = tax.num_classes
    p = torch.from_numpy(dyadic_probs(rng, 6, C)).to(dtype)
    dense = ts.cost_matrix(tax, kind, dtype=dtype)
    r_struct = conditional_risk(p, tax, distance=kind)
    r_dense = conditional_risk(p, dense)
    assert r_struct.dtype == dtype
    torch.testing.assert_close(r_struct, r_dense, rtol=0, atol=0)
    for k in {1, min(2, C), C}:
        assert torch.equal(crm_predict(p, tax, k=k, distance=kind), crm_predict(p, dense, k=k))


@given(
    tax=random_taxonomies(max_nodes=30),
    seed=st.integers(0, 2**31 - 1),
    transform=st.sampled_from(["identity", "normalize"]),
    power=st.sampled_from([1.0, 2.0, 0.5]),
)
def test_structured_equals_dense_random_probs(tax, seed, transform, power):
    """Continuous data: equal costs to rounding; equal rankings wherever the costs are not within rounding."""
    g = torch.Generator().manual_seed(seed)
    C = tax.num_classes
    p = torch.softmax(3 * torch.randn(8, C, generator=g, dtype=torch.float64), 1)
    dense = ts.cost_matrix(tax, "lca_height", transform, power, dtype=torch.float64)
    r_struct = conditional_risk(p, tax, transform=transform, power=power)
    r_dense = conditional_risk(p, dense)
    torch.testing.assert_close(r_struct, r_dense, rtol=1e-12, atol=1e-12)
    rank_s = crm_predict(p, tax, k=C, transform=transform, power=power).reshape(8, C)
    rank_d = crm_predict(p, dense, k=C).reshape(8, C)
    sorted_costs = r_dense.gather(1, rank_d)
    gaps = sorted_costs.diff(dim=1)
    clear = torch.cat([torch.ones(8, 1, dtype=torch.bool), gaps > 1e-9], 1) & torch.cat([gaps > 1e-9, torch.ones(8, 1, dtype=torch.bool)], 1)
    assert torch.equal(rank_s[clear], rank_d[clear])
    # and wherever they differ, the swapped classes cost the same
    torch.testing.assert_close(r_dense.gather(1, rank_s), sorted_costs, rtol=1e-12, atol=1e-12)


def test_path_length_uses_the_dense_matrix(seed_tax):
    p = torch.softmax(torch.randn(7, 4, dtype=torch.float64), 1)
    r = conditional_risk(p, seed_tax, distance="path_length")
    torch.testing.assert_close(r, p @ ts.cost_matrix(seed_tax, "path_length", dtype=torch.float64))


# ---------------------------------------------------------------------- 0/1 costs == argmax
@given(C=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_zero_one_costs_equal_argmax_with_ties(C, seed):
    """R_j = 1 - p_j: the lowest cost is the highest probability, ties by index in both."""
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(dyadic_probs(rng, 10, C, total=8))  # few counts: many exact ties
    argsorted = torch.sort(p, dim=1, descending=True, stable=True).indices
    zero_one = 1 - torch.eye(C, dtype=torch.float64)
    for source in (zero_one, flat_taxonomy(C)):  # dense, and structured (flat tree)
        assert torch.equal(crm_predict(p, source), argsorted[:, 0])
        assert torch.equal(crm_predict(p, source), p.argmax(dim=1))
        for k in range(2, C + 1):
            assert torch.equal(crm_predict(p, source, k=k), argsorted[:, :k])


def test_from_logits():
    tax = seed_taxonomy()
    logits = torch.randn(9, 4, dtype=torch.float64)
    logits[0, 2] = -float("inf")  # a masked class is allowed
    p = torch.softmax(logits, 1)
    torch.testing.assert_close(conditional_risk(logits, tax, from_logits=True), conditional_risk(p, tax))
    assert torch.equal(crm_predict(logits, tax, k=2, from_logits=True), crm_predict(p, tax, k=2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_device_and_dtype_follow_input(device, dtype):
    tax = seed_taxonomy()
    logits = (torch.randn(5, 4) * 30).to(device=device, dtype=dtype)  # large logits: no fp16 overflow
    r = conditional_risk(logits, tax, from_logits=True)
    assert r.device.type == device
    assert r.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(r).all()
    ref = conditional_risk(logits.double().cpu(), ts.cost_matrix(tax, dtype=torch.float64), from_logits=True)
    torch.testing.assert_close(r.double().cpu(), ref, rtol=1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5, atol=1e-2)


# ---------------------------------------------------------------------- validation
def test_rejects_bad_input(seed_tax):
    p = torch.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="k = 5 is out of range"):
        crm_predict(p, seed_tax, k=5)
    with pytest.raises(ValueError, match="k = 0"):
        crm_predict(p, seed_tax, k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        crm_predict(p, seed_tax, k=1.0)
    with pytest.raises(ValueError, match="shape"):
        crm_predict(torch.full((4,), 0.25), seed_tax)
    with pytest.raises(ValueError, match="5 columns but there are 4 classes"):
        crm_predict(torch.full((2, 5), 0.2), seed_tax)
    with pytest.raises(ValueError, match="from_logits=True"):
        crm_predict(torch.randn(2, 4), seed_tax)
    with pytest.raises(ValueError, match=r"row 1 of probs sums to 0.8"):
        crm_predict(torch.tensor([[0.25] * 4, [0.2] * 4]), seed_tax)
    bad = p.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"probs\[1, 3\] is NaN"):
        crm_predict(bad, seed_tax)
    with pytest.raises(ValueError, match=r"logits\[1, 3\] is NaN"):
        crm_predict(bad, seed_tax, from_logits=True)
    with pytest.raises(ValueError, match="-inf everywhere"):
        crm_predict(torch.tensor([[0.0, 1, 2, 3], [-float("inf")] * 4]), seed_tax, from_logits=True)
    with pytest.raises(TypeError, match="floating point"):
        crm_predict(torch.ones(2, 4, dtype=torch.long), seed_tax)
    with pytest.raises(ValueError, match="unknown distance '"):
        crm_predict(p, seed_tax, distance="euclid")


def test_rejects_bad_cost_matrix():
    p = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"cost matrix\[0, 2\] = -1.0 is negative"):
        crm_predict(p, torch.tensor([[0.0, 1, -1], [1, 0, 1], [1, 1, 0]]))
    with pytest.raises(ValueError, match=r"cost matrix\[1, 1\] = 2.0; the diagonal must be zero"):
        crm_predict(p, torch.tensor([[0.0, 1, 1], [1, 2, 1], [1, 1, 0]]))
    with pytest.raises(ValueError, match="square"):
        crm_predict(p, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"cost matrix\[2, 0\] is inf"):
        crm_predict(p, torch.tensor([[0.0, 1, 1], [1, 0, 1], [float("inf"), 1, 0]]))
    with pytest.raises(ValueError, match="4 columns but there are 3 classes"):
        crm_predict(torch.full((2, 4), 0.25), 1 - torch.eye(3))
    # one resolver for every consumer: distance= does not apply to a matrix (refused, as in the losses),
    # transform and power do (as in cost_matrix and the losses)
    with pytest.raises(ValueError, match="distance='path_length' applies to a Taxonomy"):
        crm_predict(p, 1 - torch.eye(3), distance="path_length")
    with pytest.raises(ValueError, match="distance='path_length' applies to a Taxonomy"):
        ts.ExpectedCostLoss(1 - torch.eye(3), distance="path_length", power=3)
    m = torch.tensor([[0.0, 1, 3], [1, 0, 2], [3, 2, 0]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    torch.testing.assert_close(conditional_risk(q, m, power=2.0), conditional_risk(q, m**2))


def test_numpy_cost_matrix_accepted():
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    cost = np.array([[0, 1, 4], [1, 0, 4], [4, 4, 0]])
    np.testing.assert_allclose(conditional_risk(p, cost).numpy(), loop_risk(p.numpy(), cost))


# ---------------------------------------------------------------------- the wrapper module
@pytest.mark.parametrize("device", DEVICES)
def test_crm_classifier(device):
    tax = seed_taxonomy()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    crm = CRMClassifier(model, tax, k=2, from_logits=True).to(device)
    x = torch.randn(6, 3, device=device)
    logits = model(x)
    scores = crm(x)
    assert scores.device.type == device
    torch.testing.assert_close(scores, -conditional_risk(logits, tax, from_logits=True))
    assert torch.equal(crm.predict(x), crm_predict(logits, tax, k=2, from_logits=True))
    assert torch.equal(scores.argmax(1), crm.predict(x)[:, 0])
    # the wrapper adds no state: a checkpoint of the model loads into it
    assert set(crm.state_dict()) == {"model." + k for k in model.state_dict()}
    assert "structured" in repr(crm)


def test_crm_classifier_scores_feed_the_metrics():
    """Metrics of the wrapper's output evaluate the CRM decisions (same tie rule)."""
    tax = seed_taxonomy()
    model = torch.nn.Linear(3, 4)
    crm = CRMClassifier(model, tax, k=2, from_logits=True)
    x, y = torch.randn(40, 3), torch.randint(0, 4, (40,))
    with torch.no_grad():
        scores, pred = crm(x), crm.predict(x)
    assert ts.metrics.topk_error(scores, y).item() == pytest.approx((pred[:, 0] != y).double().mean().item())
    hits = (pred == y[:, None]).any(1)
    assert ts.metrics.topk_error(scores, y, k=2).item() == pytest.approx(1 - hits.double().mean().item())


def test_crm_classifier_probabilities_and_matrix():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Softmax(dim=1))
    cost = torch.tensor([[0.0, 1, 4], [1, 0, 4], [4, 4, 0]])
    crm = CRMClassifier(model, cost, from_logits=False)
    x = torch.randn(4, 3)
    assert torch.equal(crm.predict(x), crm_predict(model(x), cost))
    assert "dense" in repr(crm)
    with pytest.raises(ValueError, match="k = 4"):
        CRMClassifier(model, cost, k=4)


# ---------------------------------------------------------------------- the tie rule itself
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
    largest=st.booleans(),
)
def test_stable_topk_and_rank_of_match_a_stable_sort(n, c, seed, largest):
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 3, (n, c), generator=g).double()  # many ties
    values[values == 2] = -float("inf")
    order = torch.sort(values, dim=1, descending=largest, stable=True).indices
    for k in range(1, c + 1):
        assert torch.equal(stable_topk(values, k, largest), order[:, :k])
    for j in range(c):
        idx = torch.full((n,), j)
        expected = (order == j).nonzero()[:, 1]
        assert torch.equal(rank_of(values, idx, largest), expected)


def test_deep_chain_tree():
    """A path graph with a side leaf at each level: depth ~ C, many unary-free levels."""
    g = nx.DiGraph()
    for i in range(30):
        g.add_edge(f"n{i}", f"n{i + 1}")
        g.add_edge(f"n{i}", f"leaf{i}")
    tax = ts.Taxonomy.from_networkx(g)
    C = tax.num_classes
    p = torch.softmax(torch.randn(4, C, dtype=torch.float64), 1)
    torch.testing.assert_close(conditional_risk(p, tax), p @ ts.cost_matrix(tax, dtype=torch.float64))


@pytest.mark.slow
def test_scale_100k_classes_without_a_dense_matrix():
    """~100,000 classes: the structured path never builds (C, C); columns checked against LCA rows."""
    rng = np.random.default_rng(0)
    n = 200_000
    parents = rng.integers(0, np.arange(1, n))  # random recursive tree: about n/2 leaves
    tax = ts.Taxonomy.from_edges(zip(parents.tolist(), range(1, n)))
    C = tax.num_classes
    assert C > 90_000
    p = torch.softmax(torch.randn(3, C, dtype=torch.float64), 1)
    risk = conditional_risk(p, tax)
    table = ts.node_distance(tax, "lca_height")
    cols = rng.choice(C, 20, replace=False)
    cost_cols = table[tax.compiled.lca_rows(cols)].T  # cost[:, j] = d(j, .) (symmetric), (C, 20)
    torch.testing.assert_close(risk[:, cols], p @ torch.from_numpy(cost_cols))
    best = crm_predict(p, tax, k=5)
    assert torch.equal(best, torch.sort(risk, dim=1, stable=True).indices[:, :5])
    y = torch.from_numpy(rng.integers(0, C, 3))
    d = ts.metrics.mean_hierarchical_distance_at_k(-risk, y, tax, 5)  # scores -R rank as CRM does
    expected = np.mean([table[tax.compiled.lca_rows([int(t)])[0, best[b].numpy()]].mean() for b, t in enumerate(y)])
    assert d.item() == pytest.approx(expected)


def test_costs_on_another_device_are_an_error_not_a_silent_move():
    tax = seed_taxonomy()
    for source in (tax, ts.cost_matrix(tax)):
        crm = CRMClassifier(torch.nn.Identity(), source, from_logits=False)
        crm.costs.to("meta")
        with pytest.raises(RuntimeError, match="move the module with .to"):
            crm(torch.full((2, 4), 0.25))
