"""Decisions at any node: every rule against a plain loop over the nodes, on random trees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.decision import NODE_RULES, node_probabilities, predict_node

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------- plain-loop oracles
class Loop:
    """Everything about the nodes of a taxonomy, by name, from the Taxonomy's own methods."""

    def __init__(self, tax: ts.Taxonomy):
        self.tax = tax
        self.names = list(tax.target_names)  # target-id order
        self.C = tax.num_classes
        self.under = {}
        for v in self.names:
            leaves = [v] if tax.is_leaf(v) else list(tax.leaves_under(v))
            self.under[v] = [tax.class_index(x) for x in leaves]
        self.depth = {v: tax.depth(v) for v in self.names}
        self.info = {v: math.log2(self.C / len(self.under[v])) for v in self.names}

    def node_probs(self, p):
        return {v: sum(p[i] for i in self.under[v]) for v in self.names}

    def threshold(self, p, tau):
        P = self.node_probs(p)
        cand = [v for v in self.names if min(P[v], 1.0) > tau or v == self.tax.root]
        return min(cand, key=lambda v: (len(self.under[v]), -P[v], -self.depth[v], self.names.index(v)))

    def crm_risks(self, p, value, alpha):
        ell = self.depth if value == "depth" else self.info
        out = {}
        for u in self.names:
            r = 0.0
            for i in range(self.C):
                a = self.tax.lca(self.tax.classes[i], u)
                r += p[i] * ((ell[self.tax.classes[i]] - ell[a]) + alpha * (ell[u] - ell[a]))
            out[u] = r
        return out

    def f_scores(self, p, beta):
        out = {}
        for u in self.names:
            f = 0.0
            for i in range(self.C):
                ci = self.tax.classes[i]
                inter = self.depth[self.tax.lca(ci, u)]
                den = beta**2 * self.depth[ci] + self.depth[u]
                f += p[i] * ((1 + beta**2) * inter / den if den else 1.0)
            out[u] = f
        return out

    def best(self, scores, largest):
        sign = -1 if largest else 1
        return min(self.names, key=lambda v: (sign * scores[v], len(self.under[v]), -self.depth[v], self.names.index(v)))


def dyadic(seed: int, n: int, C: int, total: int = 32) -> torch.Tensor:
    """Probabilities in multiples of 1/32: every sum is exact in binary, and zeros and ties are common."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multinomial(total, rng.dirichlet(np.full(C, 0.4)), size=n) / total)


def smooth(seed: int, n: int, C: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, C, generator=g, dtype=torch.float64), 1)


# ---------------------------------------------------------------------- node probabilities
@given(tax=random_taxonomies(min_nodes=2, max_nodes=30), seed=st.integers(0, 2**31 - 1))
def test_node_probabilities_equal_the_dense_indicator_product(tax, seed):
    p = smooth(seed, 7, tax.num_classes)
    loop = Loop(tax)
    indicator = torch.zeros(tax.num_classes, tax.num_nodes, dtype=torch.float64)
    for v, name in enumerate(loop.names):
        indicator[loop.under[name], v] = 1.0
    torch.testing.assert_close(node_probabilities(p, tax), p @ indicator, rtol=1e-12, atol=1e-14)
    assert torch.equal(node_probabilities(p, tax)[:, : tax.num_classes], p)


@pytest.mark.parametrize("fanout", [1, 7, 8, 9, 50])
def test_node_probabilities_of_wide_families(fanout):
    """The CPU kernel adds 8 children one at a time and the rest of a family in one reduction."""
    edges = [("r", f"g{i}") for i in range(3)] + [(f"g{i}", f"c{i}_{j}") for i in range(3) for j in range(fanout + i)]
    tax = ts.Taxonomy.from_edges(edges)
    p = smooth(1, 5, tax.num_classes)
    loop = Loop(tax)
    expected = torch.stack([p[:, loop.under[v]].sum(1) for v in loop.names], 1)
    torch.testing.assert_close(node_probabilities(p, tax), expected, rtol=1e-13, atol=1e-15)


def test_node_probabilities_from_logits_dtype_and_grad(seed_tax):
    z = torch.randn(3, 4, requires_grad=True)
    P = node_probabilities(z, seed_tax, from_logits=True)
    assert P.dtype == torch.float32 and P.shape == (3, 7)
    P[:, seed_tax.encode("sea")].sum().backward()
    expected = torch.autograd.grad(torch.softmax(z, 1)[:, 2:].sum(), z)[0]
    torch.testing.assert_close(z.grad, expected)
    assert node_probabilities(torch.softmax(z, 1).double().detach(), seed_tax).dtype == torch.float64
    assert node_probabilities(torch.zeros(0, 4), seed_tax).shape == (0, 7)


# ---------------------------------------------------------------------- each rule vs its loop
@given(tax=random_taxonomies(min_nodes=2, max_nodes=25), seed=st.integers(0, 2**31 - 1),
       tau=st.sampled_from([1.0, 0.75, 0.5, 0.25, 0.125, 1 / 64, 0.3]), exact=st.booleans())
def test_threshold_rule_matches_the_loop(tax, seed, tau, exact):
    p = dyadic(seed, 12, tax.num_classes) if exact else smooth(seed, 12, tax.num_classes)
    loop = Loop(tax)
    got = tax.decode(predict_node(p, tax, threshold=tau))
    assert got == [loop.threshold(row.tolist(), tau) for row in p]
    if tau == 0.5:
        assert predict_node(p, tax, "max_info").tolist() == predict_node(p, tax, threshold=0.5).tolist()


@given(tax=random_taxonomies(min_nodes=2, max_nodes=25), seed=st.integers(0, 2**31 - 1),
       alpha=st.sampled_from([1.0, 0.5, 0.25, 3.0, 0.0]))
def test_crm_rule_matches_the_loop_exactly_on_dyadic_probabilities(tax, seed, alpha):
    # depth costs and dyadic probabilities: every risk is exact, so ties follow the documented rule exactly
    p = dyadic(seed, 10, tax.num_classes)
    loop = Loop(tax)
    got = tax.decode(predict_node(p, tax, "crm", excess_cost=alpha))
    assert got == [loop.best(loop.crm_risks(row.tolist(), "depth", alpha), largest=False) for row in p]


@given(tax=random_taxonomies(min_nodes=2, max_nodes=25), seed=st.integers(0, 2**31 - 1),
       rule=st.sampled_from(["crm_info", "f_beta"]), param=st.sampled_from([0.5, 1.0, 2.0]))
def test_information_crm_and_f_beta_pick_an_optimum_of_the_loop(tax, seed, rule, param):
    """Irrational values (information, F ratios): the pick is optimal to rounding, and the loop's pick
    when the loop's optimum is clear by a margin."""
    p = smooth(seed, 10, tax.num_classes)
    loop = Loop(tax)
    if rule == "crm_info":
        got = tax.decode(predict_node(p, tax, "crm", value="information", excess_cost=param))
        scores = [loop.crm_risks(row.tolist(), "information", param) for row in p]
        largest = False
    else:
        got = tax.decode(predict_node(p, tax, "f_beta", beta=param))
        scores = [loop.f_scores(row.tolist(), param) for row in p]
        largest = True
    for g, sc in zip(got, scores):
        vals = sorted(sc.values(), reverse=largest)
        assert abs(sc[g] - vals[0]) <= 1e-9
        if len(vals) == 1 or abs(vals[0] - vals[1]) > 1e-9:
            assert g == loop.best(sc, largest)


@given(tax=random_taxonomies(min_nodes=2, max_nodes=25), seed=st.integers(0, 2**31 - 1))
def test_f_beta_is_optimal_on_dyadic_probabilities_with_ties(tax, seed):
    # many exact ties among the nodes' expected F1: the pick is still an optimum of the loop
    p = dyadic(seed, 10, tax.num_classes)
    loop = Loop(tax)
    got = tax.decode(predict_node(p, tax, "f_beta"))
    for g, row in zip(got, p):
        sc = loop.f_scores(row.tolist(), 1.0)
        assert abs(sc[g] - max(sc.values())) <= 1e-12


# ---------------------------------------------------------------------- properties of the threshold rule
@given(tax=random_taxonomies(min_nodes=2, max_nodes=30), seed=st.integers(0, 2**31 - 1))
def test_threshold_one_is_the_root_and_tiny_threshold_the_argmax_class(tax, seed):
    p = smooth(seed, 9, tax.num_classes).float()
    root = tax.encode([tax.root])[0]
    assert (predict_node(p, tax, threshold=1.0) == int(root)).all()
    # below every positive probability: the most probable class (lowest index among equal ones)
    tiny = float(p.min()) / 2
    assert predict_node(p, tax, threshold=tiny).tolist() == p.argmax(1).tolist()


def test_threshold_one_is_the_root_even_when_sums_round_above_one():
    tax = ts.Taxonomy.from_nested({"r": {"a": ["x", "y"], "b": ["z"]}})
    p = torch.tensor([[0.5005, 0.4999, 0.0]])  # sums to 1.0004 (within the checked tolerance)
    assert tax.decode(predict_node(p, tax, threshold=1.0)) == ["r"]
    assert tax.decode(predict_node(p, tax, threshold=0.9999)) == ["a"]


def test_sums_above_one_can_admit_two_disjoint_nodes_above_one_half():
    """Rows may sum to 1 + 1e-3: two siblings can then both pass τ = 0.5; the rule still takes the larger."""
    tax = ts.Taxonomy.from_edges([("r", "x"), ("r", "y"), ("r", "z")])
    p = torch.tensor([[0.5003, 0.5005, 0.0], [0.5005, 0.5003, 0.0], [0.6, 0.4, 0.0]], dtype=torch.float64)
    loop = Loop(tax)
    assert tax.decode(predict_node(p, tax)) == ["y", "x", "x"] == [loop.threshold(r.tolist(), 0.5) for r in p]


def test_unary_chains_answer_the_lowest_node_of_the_chain():
    tax = ts.Taxonomy.from_edges([("r", "u1"), ("u1", "u2"), ("u2", "x"), ("u2", "y"), ("r", "z")])
    p = torch.tensor([[0.5, 0.4, 0.1], [0.45, 0.45, 0.1]], dtype=torch.float64)
    assert tax.decode(predict_node(p, tax)) == ["u2", "u2"]  # u1, u2 hold the same classes and mass
    assert tax.decode(predict_node(p, tax, "crm", value="information")) == ["u2", "u2"]
    # a single-class chain under the root: the class itself
    chain = ts.Taxonomy.from_edges([("r", "a"), ("a", "b"), ("b", "leaf")])
    assert chain.decode(predict_node(torch.ones(2, 1), chain, threshold=0.5)) == ["leaf", "leaf"]
    assert chain.decode(predict_node(torch.ones(1, 1), chain, threshold=1.0)) == ["r"]


def test_seed_example_by_hand(seed_tax):
    p = torch.tensor([[0.45, 0.35, 0.1, 0.1]])
    assert seed_tax.decode(predict_node(p, seed_tax)) == ["mammal"]
    assert seed_tax.decode(predict_node(p, seed_tax, threshold=0.4)) == ["horse"]
    assert seed_tax.decode(predict_node(p, seed_tax, threshold=0.81)) == ["animal"]
    # crm, depth, α = 1: mammal has P = 0.8 > 1/2, horse 0.45 < 1/2: the tree median is mammal
    assert seed_tax.decode(predict_node(p, seed_tax, "crm")) == ["mammal"]
    # α = 1/4: a step pays when P > 0.2: horse
    assert seed_tax.decode(predict_node(p, seed_tax, "crm", excess_cost=0.25)) == ["horse"]
    # F1: mammal 0.8 * 2*1/3 = 0.533; horse 0.45 + 0.35 * 2*1/4 = 0.625
    assert seed_tax.decode(predict_node(p, seed_tax, "f_beta")) == ["horse"]


def caterpillar_with_a_bush(levels: int = 40) -> tuple[list[tuple[str, str]], ts.Taxonomy]:
    """A deep clade with a class at every depth (a caterpillar: path c1 … c_levels, leaf l_k under c_k) beside a
    shallow bush: 40 distinct class depths."""
    edges = [("root", "c1")] + [(f"c{k}", f"c{k + 1}") for k in range(1, levels)]
    edges += [(f"c{k}", f"l{k}") for k in range(1, levels + 1)] + [(f"c{levels}", "tip")]
    edges += [("root", f"s{j}") for j in range(5)] + [(f"s{j}", f"s{j}_{m}") for j in range(5) for m in range(4)]
    return edges, ts.Taxonomy.from_edges(edges)


def f_scores_from_edges(edges, tax, p, beta):
    """E[F_β(u)] for every node by ancestor sets built from the edge list (not the library's LCA)."""
    parent = {c: a for a, c in edges}

    def ancestors(v):  # ancestor-or-self set without the root
        out = set()
        while v in parent:
            out.add(v)
            v = parent[v]
        return out

    anc = {v: ancestors(v) for v in tax.target_names}
    b2 = beta**2
    return {u: sum(p[i] * (1 + b2) * len(anc[u] & anc[c]) / (b2 * len(anc[c]) + len(anc[u]))
                   for i, c in enumerate(tax.classes)) for u in tax.target_names}


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_f_beta_on_a_deep_clade_with_many_class_depths(beta):
    """40 class depths: the pick is the best node of ancestor-set scores, with the documented tie rule."""
    edges, tax = caterpillar_with_a_bush()
    loop = Loop(tax)
    g = torch.Generator().manual_seed(7)
    # mass spread down the caterpillar, on the bush, or on one deep class
    z = torch.randn(24, tax.num_classes, generator=g, dtype=torch.float64)
    z[:8, : 41] += torch.linspace(3, 0, 41, dtype=torch.float64)
    z[8:16, 41:] += 2.0
    z[16:, tax.class_index("l30")] += torch.linspace(0, 6, 8, dtype=torch.float64)
    p = torch.softmax(z, 1)
    got = tax.decode(predict_node(p, tax, "f_beta", beta=beta))
    assert len({tax.depth(c) for c in tax.classes}) == 40
    for g_, row in zip(got, p.tolist()):
        sc = f_scores_from_edges(edges, tax, row, beta)
        vals = sorted(sc.values(), reverse=True)
        assert sc[g_] >= vals[0] - 1e-12
        if vals[0] - vals[1] > 1e-9:
            assert g_ == loop.best(sc, largest=True)
    assert len(set(got)) > 4  # the samples do not all answer the same node


def test_f_beta_costs_one_top_down_pass_per_class_depth(monkeypatch):
    """The documented cost: K passes up and K down per chunk, K the number of distinct class depths (one each
    when they are equal, as "crm")."""
    from taxosmooth.tree_ops import nodes as passes

    calls = []
    for name in ("up", "down"):
        real = getattr(passes, name)
        monkeypatch.setattr(passes, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    _, deep = caterpillar_with_a_bush()
    for tax, K in [(deep, 40), (ts.Taxonomy.from_nested({"r": {"a": ["x", "y"], "b": ["z", "w"]}}), 1)]:
        calls.clear()
        p = smooth(0, 5, tax.num_classes)
        ref = predict_node(p, tax, "crm")
        assert calls == ["up", "down"]  # crm: one pass each way
        calls.clear()
        predict_node(p, tax, "f_beta")
        assert calls.count("down") == K and calls.count("up") == K, (calls, K)
        assert ref.shape == (5,)


# ---------------------------------------------------------------------- chunks, devices, dtypes
def test_chunks_give_the_same_answers(monkeypatch):
    from taxosmooth.decision import nodes

    tax = seed_taxonomy()
    p = smooth(3, 500, 4)
    ref = {r: predict_node(p, tax, r) for r in NODE_RULES}
    monkeypatch.setitem(nodes._CHUNK_ELEMENTS, "cpu", 7)  # 64 rows per chunk
    for r in NODE_RULES:
        assert torch.equal(predict_node(p, tax, r), ref[r])
    torch.testing.assert_close(node_probabilities(p, tax)[:, tax.encode(["mammal"])[0]], p[:, :2].sum(1))


def test_keys_in_float64_where_the_nodes_outnumber_float32_integers(monkeypatch):
    """The rules select by integer keys (fewer classes, rank) multiplied into 0/1 masks; past 2**24 nodes float32
    cannot hold them exactly and the keys are float64: the same answers."""
    from taxosmooth.data import load_animals
    from taxosmooth.decision import nodes

    tax = load_animals()
    for p in (dyadic(4, 200, tax.num_classes).float(), smooth(4, 200, tax.num_classes).float()):
        ref = {r: predict_node(p, tax, r) for r in NODE_RULES}
        monkeypatch.setattr(nodes, "_EXACT_INTEGERS", {torch.float64: 2**53})
        tree = nodes.tree_tensors(tax)
        assert nodes._key_dtype(nodes.rules(tree, tax), torch.float32) == torch.float64
        for r in NODE_RULES:
            assert torch.equal(predict_node(p, tax, r), ref[r]), r
        monkeypatch.undo()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_devices_and_dtypes(device, dtype):
    from taxosmooth.data import load_animals

    tax = load_animals()
    p = dyadic(1, 40, tax.num_classes).to(device=device, dtype=dtype)
    ref = {r: predict_node(p.cpu().double(), tax, r) for r in NODE_RULES}
    for r in NODE_RULES:
        got = predict_node(p, tax, r)
        assert got.device.type == device and got.dtype == torch.int64
        assert torch.equal(got.cpu(), ref[r]), r
    P = node_probabilities(p, tax)
    assert P.device.type == device and P.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


def test_gradient_path_equals_the_chunked_path(monkeypatch):
    """With a gradient the whole batch is one differentiable pass; without, chunks: the same sums, the same bits."""
    from taxosmooth.data import load_animals
    from taxosmooth.decision import nodes

    tax = load_animals()
    p = smooth(5, 300, tax.num_classes).requires_grad_(True)
    P_grad = node_probabilities(p, tax)
    monkeypatch.setitem(nodes._CHUNK_ELEMENTS, "cpu", 7)  # 64 rows per chunk
    P_chunks = node_probabilities(p.detach(), tax)
    assert torch.equal(P_grad.detach(), P_chunks) and P_grad.is_contiguous()
    (g,) = torch.autograd.grad(P_grad[:, tax.num_classes:].sum(), p)  # every class is under the root
    assert torch.equal(g, torch.tensor([[float(tax.depth(c)) for c in tax.classes]], dtype=g.dtype).expand_as(g))


@pytest.mark.parametrize("rule", NODE_RULES)
def test_a_decision_pass_compiles_to_one_graph_with_the_eager_answers(rule):
    """The pass of one chunk (node masses, rule, tie rule) under torch.compile(fullgraph=True): no graph break, no
    host read, the same answers as eager."""
    from taxosmooth.data import load_animals
    from taxosmooth.decision import nodes
    from taxosmooth.tree_ops import tree_tensors

    tax = load_animals()
    tree = tree_tensors(tax)
    r = nodes.rules(tree, tax)
    opts = nodes._options(rule, None, None, None, None)
    batches = (dyadic(2, 60, tax.num_classes), smooth(3, 60, tax.num_classes))
    eager = [nodes.decide(tree, r, p, rule, opts) for p in batches]
    torch._dynamo.reset()
    compiled = torch.compile(lambda p: nodes.decide(tree, r, p, rule, opts), fullgraph=True, backend="aot_eager")
    for p, want in zip(batches, eager):
        got = compiled(p)
        assert torch.equal(got, want), rule
        assert torch.equal(got, predict_node(p, tax, rule))


# ---------------------------------------------------------------------- bad input
def test_bad_input(seed_tax):
    p = torch.softmax(torch.randn(2, 4), 1)
    for bad in (0, 0.0, -0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"threshold = .* outside \(0, 1\]|threshold must be finite"):
            predict_node(p, seed_tax, threshold=bad)
    with pytest.raises(TypeError, match="threshold must be a number"):
        predict_node(p, seed_tax, threshold=True)
    with pytest.raises(ValueError, match="unknown rule 'deepest'; choose one of threshold, max_info, crm, f_beta"):
        predict_node(p, seed_tax, "deepest")
    with pytest.raises(ValueError, match=r"rule='crm' takes no threshold="):
        predict_node(p, seed_tax, "crm", threshold=0.3)
    with pytest.raises(ValueError, match=r"rule='threshold' takes no beta="):
        predict_node(p, seed_tax, beta=2.0)
    with pytest.raises(ValueError, match="beta = 0"):
        predict_node(p, seed_tax, "f_beta", beta=0)
    with pytest.raises(ValueError, match="excess_cost = -1"):
        predict_node(p, seed_tax, "crm", excess_cost=-1)
    with pytest.raises(ValueError, match="unknown value 'height'"):
        predict_node(p, seed_tax, "crm", value="height")
    with pytest.raises(ValueError, match="5 columns but there are 4 classes"):
        predict_node(torch.softmax(torch.randn(2, 5), 1), seed_tax)
    with pytest.raises(ValueError, match=r"row 1 of probs sums to 0\.5"):
        predict_node(torch.tensor([[0.5, 0.5, 0, 0], [0.25, 0.25, 0, 0]]), seed_tax)
    with pytest.raises(ValueError, match="from_logits=True"):
        node_probabilities(torch.randn(2, 4), seed_tax)
    with pytest.raises(TypeError, match="taxonomy must be a Taxonomy"):
        predict_node(p, ts.class_distances(seed_tax))
