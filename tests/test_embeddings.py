"""Class embeddings (Barz & Denzler), HAFrame weights, and the heads built on them, against formula oracles."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _trees import random_taxonomies
from hypothesis import given
from test_heads import TREES, unbalanced

import taxosmooth as ts
from taxosmooth.data import load_animals
from taxosmooth.embeddings import class_embeddings, class_similarity, haframe_similarity, haframe_weights
from taxosmooth.heads import EmbeddingHead, FixedClassifier
from taxosmooth.losses import CosineLoss

REAL = TREES + [load_animals]


# ---------------------------------------------------------------------- oracles (plain loops)
def similarity_loop(tax, distance="lca_height") -> np.ndarray:
    """1 - d / max d from the LCA of each pair, by name."""
    C = tax.num_classes
    d = np.zeros((C, C))
    for i, a in enumerate(tax.classes):
        for j, b in enumerate(tax.classes):
            if i == j:
                continue
            lca = tax.lca(a, b)
            if distance == "lca_height":
                d[i, j] = tax.height(lca)
            elif distance == "lca_depth_complement":
                d[i, j] = tax.max_depth - tax.depth(lca)
            else:
                d[i, j] = tax.depth(a) + tax.depth(b) - 2 * tax.depth(lca)
    return 1.0 - d / d.max(), d


def barz_incremental(sim: np.ndarray) -> np.ndarray:
    """Barz & Denzler's construction: place the classes one at a time on the unit sphere (``C`` dimensions)."""
    C = sim.shape[0]
    emb = np.zeros((C, C))
    emb[0, 0] = 1.0
    for c in range(1, C):
        emb[c, :c] = np.linalg.solve(emb[:c, :c], sim[c, :c])
        emb[c, c] = np.sqrt(max(1.0 - np.sum(emb[c, :c] ** 2), 0.0))
    return emb


# ---------------------------------------------------------------------- class_embeddings
@pytest.mark.parametrize("make", REAL)
@pytest.mark.parametrize("distance", ["lca_height", "lca_depth_complement"])
def test_gram_matrix_is_the_similarity(make, distance):
    tax = make()
    s, _ = similarity_loop(tax, distance)
    np.testing.assert_allclose(class_similarity(tax, distance), s, atol=1e-12)
    phi = class_embeddings(tax, distance)
    assert phi.dtype == torch.float64 and phi.shape[0] == tax.num_classes and phi.shape[1] <= tax.num_classes
    np.testing.assert_allclose((phi @ phi.T).numpy(), s, atol=1e-6)
    np.testing.assert_allclose(phi.norm(dim=1).numpy(), 1.0, atol=1e-12)
    assert phi.shape[1] == np.linalg.matrix_rank(s, tol=1e-9)


@given(random_taxonomies(min_nodes=3, max_nodes=40))
def test_gram_matrix_random_trees(tax):
    if tax.num_classes < 2:
        with pytest.raises(ValueError, match="at least 2"):
            class_embeddings(tax)
        return
    s, _ = similarity_loop(tax)
    phi = class_embeddings(tax).numpy()
    np.testing.assert_allclose(phi @ phi.T, s, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(phi, axis=1), 1.0, atol=1e-12)


def test_same_dot_products_as_the_incremental_construction():
    tax = load_animals()
    s, _ = similarity_loop(tax)
    assert np.linalg.eigvalsh(s).min() > 1e-9  # positive definite: their construction applies
    theirs = barz_incremental(s)
    ours = class_embeddings(tax).numpy()
    np.testing.assert_allclose(ours @ ours.T, theirs @ theirs.T, atol=1e-9)


def test_dimension():
    tax = unbalanced()
    s, _ = similarity_loop(tax)
    rank = np.linalg.matrix_rank(s, tol=1e-9)
    wide = class_embeddings(tax, dim=rank + 5)
    assert wide.shape == (tax.num_classes, rank + 5)
    np.testing.assert_allclose((wide @ wide.T).numpy(), s, atol=1e-6)
    with pytest.raises(ValueError, match=rf"dim = {rank - 1} is too small .*rank {rank}; use dim >= {rank}"):
        class_embeddings(tax, dim=rank - 1)
    # a chain of unary nodes over two classes: the similarity is the identity, rank 2
    chain = ts.Taxonomy.from_nested({"a": {"b": {"c": ["x", "y"]}}})
    e = class_embeddings(chain, dtype=torch.float32)
    assert e.shape == (2, 2) and e.dtype == torch.float32
    torch.testing.assert_close(e @ e.T, torch.eye(2))


def test_path_length_is_refused_when_not_positive_semidefinite():
    # path_length is not a function of the LCA: on this weighted tree its similarity is indefinite
    edges = [(0, 1, 1.0), (1, 2, 10.0), (1, 3, 10.0), (1, 4, 1.0), (0, 5, 10.0), (0, 6, 10.0), (0, 7, 1.0), (0, 8, 10.0)]
    tax = ts.Taxonomy.from_edges(edges)
    d = ts.class_distances(tax, "path_length")
    assert np.linalg.eigvalsh(1 - d / d.max()).min() < -1e-2
    with pytest.raises(ValueError, match="distance='path_length' is not positive semidefinite.*lca_height"):
        class_embeddings(tax, "path_length")
    phi = class_embeddings(tax)  # lca_height: always exact
    np.testing.assert_allclose((phi @ phi.T).numpy(), similarity_loop(tax)[0], atol=1e-6)


def test_user_distance_matrix():
    tax = unbalanced()
    _, d = similarity_loop(tax)
    phi = class_embeddings(d)  # a matrix is a source of its own
    np.testing.assert_allclose((phi @ phi.T).numpy(), 1 - d / d.max(), atol=1e-6)
    bad = d.copy()
    bad[0, 1] += 1
    with pytest.raises(ValueError, match=r"distance matrix\[0, 1\] = .* but \[1, 0\]"):
        class_embeddings(bad)
    with pytest.raises(ValueError, match="distance='lca_height' applies to a Taxonomy"):
        class_embeddings(d, "lca_height")
    single = nx.DiGraph()
    single.add_node("alone")
    with pytest.raises(ValueError, match="1 class"):
        class_embeddings(ts.Taxonomy.from_networkx(single))


# ---------------------------------------------------------------------- CosineLoss and EmbeddingHead
def test_cosine_loss_against_a_loop():
    phi = class_embeddings(unbalanced(), dtype=torch.float32)
    x, t = torch.randn(9, phi.shape[1]), torch.randint(0, phi.shape[0], (9,))
    loop = torch.stack([1 - F.cosine_similarity(x[k], phi[t[k]], dim=0) for k in range(9)])
    torch.testing.assert_close(CosineLoss(phi, reduction="none")(x, t), loop)
    torch.testing.assert_close(CosineLoss(phi)(x, t), loop.mean())
    t2 = t.clone()
    t2[0] = -100
    torch.testing.assert_close(CosineLoss(phi)(x, t2), loop[1:].mean())
    with pytest.raises(ValueError, match="zero or not finite"):
        CosineLoss(torch.zeros(3, 2))
    with pytest.raises(IndexError, match=r"target\[0\] = 40"):
        CosineLoss(phi)(x, torch.full((9,), 40))


def test_cosine_loss_lives_with_the_losses():
    import taxosmooth.embeddings as E

    assert E.CosineLoss is CosineLoss is ts.losses.CosineLoss  # its first home still imports it
    assert "CosineLoss" in ts.losses.__all__ and "CosineLoss" not in E.__all__
    assert CosineLoss.__module__ == "taxosmooth.losses.cosine"


def test_embedding_head():
    tax = unbalanced()
    torch.manual_seed(0)
    head = EmbeddingHead(5, tax, ce_weight=0.1)
    phi = class_embeddings(tax, dtype=torch.float32)
    x, t = torch.randn(8, 5), torch.randint(0, tax.num_classes, (8,))
    z = head.embed(x)
    cos = torch.stack([torch.stack([F.cosine_similarity(z[k], phi[c], dim=0) for c in range(tax.num_classes)])
                       for k in range(8)])
    torch.testing.assert_close(head(x), cos, atol=1e-6, rtol=1e-5)
    logits = head.classifier[2](head.classifier[1](torch.relu(z)))
    expected = (1 - cos.gather(1, t.unsqueeze(1)).squeeze(1)) + 0.1 * F.cross_entropy(logits, t, reduction="none")
    torch.testing.assert_close(head.loss(x, t, reduction="none"), expected, atol=1e-6, rtol=1e-5)
    plain = EmbeddingHead(5, phi)
    with pytest.raises(RuntimeError, match="ce_weight > 0"):
        plain.classifier_logits(x)
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        EmbeddingHead(0, phi)
    with pytest.raises(ValueError, match="ce_weight must be finite and >= 0"):
        EmbeddingHead(3, phi, ce_weight=-1)


# ---------------------------------------------------------------------- HAFrame
def haframe_oracle(d: np.ndarray, gamma: float, mapping: str = "exponential", n: int = 100):
    """The authors' search: every candidate of linspace(-1/(C-1), -1, n), keep the smallest PSD one."""
    C = d.shape[0]
    best = float("inf")
    for s in np.linspace(-1.0 / (C - 1), -1.0, n):
        if mapping == "exponential":
            S = (1 - s) * np.exp(-gamma * d / d.max()) + s
        else:
            S = -((1 - s) * d / d.max() - 1)
        w = np.linalg.eigvalsh(S)
        w[np.abs(w) < 1e-6] = 0
        if w.min() >= 0:
            best = min(best, s)
    if mapping == "exponential":
        return (1 - best) * np.exp(-gamma * d / d.max()) + best, best
    return -((1 - best) * d / d.max() - 1), best


@pytest.mark.parametrize("make", REAL)
@pytest.mark.parametrize("gamma,mapping", [(1.0, "exponential"), (3.0, "exponential"), (1.0, "linear")])
def test_haframe_similarity_and_weights(make, gamma, mapping):
    tax = make()
    _, d = similarity_loop(tax)
    S_expected, s_expected = haframe_oracle(d, gamma, mapping)
    S, s_min = haframe_similarity(tax, gamma=gamma, mapping=mapping)
    assert s_min == pytest.approx(s_expected, abs=1e-12)
    np.testing.assert_allclose(S, S_expected, atol=1e-12)
    w = haframe_weights(tax, gamma=gamma, mapping=mapping, dtype=torch.float64)
    assert w.shape == (tax.num_classes, tax.num_classes)
    np.testing.assert_allclose((w @ w.T).numpy(), S_expected, atol=1e-5)
    np.testing.assert_allclose(w.norm(dim=1).numpy(), 1.0, atol=1e-5)
    # the rotation is random (seeded) but the frame's geometry is not
    w2 = haframe_weights(tax, gamma=gamma, mapping=mapping, seed=7, dtype=torch.float64)
    assert not torch.allclose(w, w2)
    np.testing.assert_allclose((w2 @ w2.T).numpy(), S_expected, atol=1e-5)


def test_haframe_arguments():
    tax = unbalanced()
    S, s_min = haframe_similarity(tax, gamma=2.0)
    rank = int(np.sum(np.linalg.eigvalsh(S) > 1e-6))
    w = haframe_weights(tax, rank + 3, gamma=2.0)
    assert w.shape == (tax.num_classes, rank + 3) and w.dtype == torch.float32
    with pytest.raises(ValueError, match=rf"dim = {rank - 1} is too small .*rank {rank}; use dim >= {rank}"):
        haframe_weights(tax, rank - 1, gamma=2.0)
    S0, s0 = haframe_similarity(tax, gamma=2.0, min_similarity=0.0)
    assert s0 == 0.0 and S0.min() > 0
    with pytest.raises(ValueError, match="min_similarity = -1.0 makes the similarity not positive semidefinite"):
        haframe_similarity(tax, gamma=2.0, min_similarity=-1.0)
    with pytest.raises(ValueError, match="gamma must be finite and > 0"):
        haframe_similarity(tax, gamma=0)
    with pytest.raises(ValueError, match="mapping must be one of"):
        haframe_similarity(tax, mapping="cubic")


def test_fixed_classifier_loss_against_the_authors_formula():
    tax = unbalanced()
    torch.manual_seed(0)
    frame = haframe_weights(tax, gamma=2.0)
    S = torch.from_numpy(haframe_similarity(tax, gamma=2.0)[0]).float()
    head = FixedClassifier(6, frame, cosine_weight=0.4)
    x, t = torch.randn(10, 6), torch.randint(0, tax.num_classes, (10,))
    f = head.features(x)
    logits = f @ frame.T
    torch.testing.assert_close(head(x), logits)
    # GeneralSquareCosineSimilarityLoss: per class, cosine of the feature and the class vector, minus S[y]
    sq = sum(torch.square(F.cosine_similarity(frame[c], f, dim=1) - S[t, c]) for c in range(tax.num_classes))
    expected = 0.6 * F.cross_entropy(logits, t) + 0.4 * sq.sum() / 10
    torch.testing.assert_close(head.loss(x, t), expected, atol=1e-5, rtol=1e-5)
    head.loss(x, t).backward()
    assert head.projection.weight.grad is not None
    # a frame loaded into the head replaces the cached similarities
    other = haframe_weights(tax, gamma=4.0)
    head.load_state_dict({**head.state_dict(), "frame": other})
    S4 = torch.from_numpy(haframe_similarity(tax, gamma=4.0)[0]).float()
    f, logits = head.features(x), head.features(x) @ other.T
    sq = sum(torch.square(F.cosine_similarity(other[c], f, dim=1) - S4[t, c]) for c in range(tax.num_classes))
    torch.testing.assert_close(head.loss(x, t), 0.6 * F.cross_entropy(logits, t) + 0.4 * sq.sum() / 10,
                               atol=1e-5, rtol=1e-5)
    assert [n for n, _ in head.named_parameters()] == ["projection.weight", "projection.bias"]
    bare = FixedClassifier(None, frame, cosine_weight=0.0)
    z = torch.randn(4, frame.shape[1])
    torch.testing.assert_close(bare.loss(z, t[:4]), F.cross_entropy(z @ frame.T, t[:4]))
    with pytest.raises(ValueError, match="cosine_weight must be in"):
        FixedClassifier(6, frame, cosine_weight=1.5)
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        FixedClassifier(0, frame)
    with pytest.raises(ValueError, match=r"input must have shape \(N, 6\)"):
        head(torch.randn(2, 5))
