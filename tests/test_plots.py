"""Plots: dendrogram geometry against a plain recursive oracle, and the figures themselves."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given

import taxosmooth as ts
from taxosmooth import plots
from taxosmooth.data import load_animals


# ---------------------------------------------------------------- oracle
def oracle_layout(tax):
    """Positions by a recursive walk over tax.children: leaves 0, 1, ... in visiting order,
    an internal node midway between its first and last child."""
    pos, leaves = {}, []

    def visit(v):
        kids = tax.children(v)
        if not kids:
            pos[v] = float(len(leaves))
            leaves.append(v)
            return
        for k in kids:
            visit(k)
        pos[v] = (pos[kids[0]] + pos[kids[-1]]) / 2

    sys.setrecursionlimit(max(1000, 4 * tax.num_nodes))
    visit(tax.root)
    return pos, leaves


@given(random_taxonomies(max_nodes=40))
def test_positions_match_recursive_layout(tax):
    pos, height = plots.dendrogram_coordinates(tax)
    want, leaves = oracle_layout(tax)
    assert [pos[tax.node_index(v)] for v in tax.nodes] == [want[v] for v in tax.nodes]
    # the leaf order of the drawing is the order of tree_order
    assert [tax.classes[i] for i in plots.tree_order(tax)] == leaves
    assert height.tolist() == [float(tax.height(v)) for v in tax.nodes]


@given(random_taxonomies(max_nodes=40))
def test_merge_heights_are_the_distances(tax):
    """Two classes meet at their LCA; with node_height matching a distance kind, its height is their distance."""
    for node_height, kind in (("height", "lca_height"), ("depth", "lca_depth_complement")):
        _, h = plots.dendrogram_coordinates(tax, node_height)
        d = ts.class_distances(tax, kind)
        for i, a in enumerate(tax.classes):
            for j, b in enumerate(tax.classes):
                if i != j:
                    assert h[tax.node_index(tax.lca(a, b))] == d[i, j]


@given(random_taxonomies(max_nodes=30, weighted=True))
def test_weighted_depth_heights(tax):
    _, h = plots.dendrogram_coordinates(tax, "weighted_depth")
    wdepth = {v: sum(w for _, _, w in [e for e in tax.edges() if e[1] in tax.ancestors(v, True)]) for v in tax.nodes}
    top = max(wdepth[c] for c in tax.classes)
    for v in tax.nodes:
        want = 0.0 if tax.is_leaf(v) else top - wdepth[v]
        assert h[tax.node_index(v)] == pytest.approx(want)


@given(random_taxonomies(max_nodes=40))
def test_segments_are_the_tree_edges(tax):
    pos, h = plots.dendrogram_coordinates(tax)
    seg = plots.dendrogram_segments(tax)
    got = sorted(tuple(np.round(s.ravel(), 9)) for s in seg)
    want = []
    for v in tax.nodes:
        i = tax.node_index(v)
        p = tax.parent(v)
        if p is not None:  # stem: at the node's position, from the parent's height down to its own
            want.append((h[tax.node_index(p)], pos[i], h[i], pos[i]))
        kids = tax.children(v)
        if kids:  # bar: at the node's height, from the first to the last child
            want.append((h[i], pos[tax.node_index(kids[0])], h[i], pos[tax.node_index(kids[-1])]))
    assert got == sorted(tuple(np.round(w, 9)) for w in want)
    # without leaf stems: exactly the leaves' segments go
    fewer = plots.dendrogram_segments(tax, leaf_stems=False)
    assert len(seg) - len(fewer) == tax.num_classes - (1 if tax.num_nodes == 1 else 0)


def test_tree_order_makes_subtrees_contiguous():
    tax = load_animals()
    order = [tax.classes[i] for i in plots.tree_order(tax)]
    for v in tax.nodes:
        rows = sorted(order.index(c) for c in tax.leaves_under(v))
        assert rows == list(range(rows[0], rows[0] + len(rows))), v


def test_custom_node_heights_are_checked(seed_tax):
    with pytest.raises(ValueError, match="one value per node"):
        plots.dendrogram_coordinates(seed_tax, np.ones(3))
    with pytest.raises(ValueError, match="node_height must be"):
        plots.dendrogram_coordinates(seed_tax, "bogus")
    _, h = plots.dendrogram_coordinates(seed_tax, ts.node_distance(seed_tax, "lca_height") * 2)
    assert h[seed_tax.node_index("animal")] == 4.0


# ---------------------------------------------------------------- figures
def _render(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def test_plot_matrix_labels_and_image_follow_tree_order():
    tax = ts.Taxonomy.from_nested({"animal": {"sea": ["whale", "shark"], "mammal": ["horse", "zebra"]}},
                                  classes=["horse", "whale", "zebra", "shark"])
    q = ts.soft_targets(tax, 2.0)
    fig = plots.plot_matrix(q, tax, title="t", colorbar_label="q")
    ax_heat = fig.axes[0]
    # tree order: each group of siblings stays together, the groups in the order of their first class
    tree = ["horse", "zebra", "whale", "shark"]
    assert [t.get_text() for t in ax_heat.get_yticklabels()] == tree
    assert [t.get_text() for t in ax_heat.get_xticklabels()] == tree
    order = [tax.class_index(c) for c in tree]
    np.testing.assert_array_equal(ax_heat.images[0].get_array(), q.double().numpy()[np.ix_(order, order)])
    # small matrices carry their values in the cells
    assert len(ax_heat.texts) == 16
    pixels = _render(fig)
    assert pixels[..., :3].std() > 10  # not blank


def test_plot_matrix_given_classes_reorders_like_the_taxonomy(seed_tax):
    d = ts.class_distances(seed_tax)
    perm = [2, 0, 3, 1]
    shuffled = d[np.ix_(perm, perm)]
    a = plots.plot_matrix(d, seed_tax).axes[0].images[0].get_array()
    b = plots.plot_matrix(shuffled, seed_tax, classes=[seed_tax.classes[i] for i in perm]).axes[0].images[0].get_array()
    np.testing.assert_array_equal(a, b)


def test_plot_matrix_without_taxonomy_draws_as_given():
    m = np.arange(9.0).reshape(3, 3)
    fig = plots.plot_matrix(m, classes=["a", "b", "c"])
    assert len(fig.axes) == 2  # heatmap + colour bar, no dendrograms
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), m)


def test_plot_matrix_at_a_thousand_classes_has_no_labels():
    edges = [("r", f"g{i}") for i in range(10)] + [(f"g{i}", f"s{i}_{j}") for i in range(10) for j in range(10)]
    edges += [(f"s{i}_{j}", f"c{i}_{j}_{k}") for i in range(10) for j in range(10) for k in range(10)]
    tax = ts.Taxonomy.from_edges(edges)
    assert tax.num_classes == 1000
    fig = plots.plot_matrix(ts.soft_targets(tax, 10.0), tax)
    heat, left, top = fig.axes[:3]
    assert list(heat.get_yticklabels()) == [] and len(heat.texts) == 0
    lines = left.collections[0]
    assert len(lines.get_segments()) == 2 * (tax.num_nodes - tax.num_classes) - 1  # no leaf stems
    assert _render(fig)[..., :3].std() > 10


def test_plot_matrix_checks_its_input(seed_tax):
    with pytest.raises(ValueError, match="square"):
        plots.plot_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="3 classes but the taxonomy has 4"):
        plots.plot_matrix(np.zeros((3, 3)), seed_tax)
    with pytest.raises(ValueError, match="once"):
        plots.plot_matrix(np.zeros((4, 4)), seed_tax, classes=["horse", "horse", "whale", "shark"])
    with pytest.raises(ts.UnknownClassError, match="cow"):
        plots.plot_matrix(np.zeros((4, 4)), seed_tax, classes=["horse", "zebra", "whale", "cow"])


def test_log_colour_scale_is_chosen_for_peaked_targets(seed_tax):
    from matplotlib.colors import LogNorm

    fig = plots.plot_matrix(ts.soft_targets(seed_tax, 30.0), seed_tax)
    assert isinstance(fig.axes[0].images[0].norm, LogNorm)
    fig = plots.plot_matrix(ts.class_distances(seed_tax), seed_tax)
    assert not isinstance(fig.axes[0].images[0].norm, LogNorm)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"taxosmooth\[plot\]"):
        plots.plot_matrix(np.zeros((2, 2)))


def test_tensor_input_and_savefig(tmp_path):
    import matplotlib.image as mpimg

    tax = seed_taxonomy()
    fig = plots.plot_matrix(torch.tensor(ts.class_distances(tax), dtype=torch.float16), tax, title="seed")
    fig.savefig(tmp_path / "seed.png")
    img = mpimg.imread(tmp_path / "seed.png")
    assert img.shape[0] > 300 and img.shape[1] > 300


def test_large_matrices_are_drawn_as_block_means(monkeypatch, seed_tax):
    monkeypatch.setattr(plots, "MAX_CELLS", 2)
    d = ts.class_distances(seed_tax)
    fig = plots.plot_matrix(d, seed_tax)
    image = fig.axes[0].images[0]
    order = plots.tree_order(seed_tax)
    blocks = d[np.ix_(order, order)].reshape(2, 2, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(image.get_array(), blocks)
    assert image.get_extent() == [-0.5, 3.5, 3.5, -0.5]  # still in cell coordinates, under the dendrogram


# ---------------------------------------------------------------- evaluation plots
def _eval_case():
    tax = load_animals()
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(200, tax.num_classes, generator=g)
    target = torch.randint(0, tax.num_classes, (200,), generator=g)
    return tax, logits, target


def test_plot_operating_curve_draws_the_front_and_its_area(tmp_path):
    tax, logits, target = _eval_case()
    curves = {"model": ts.metrics.operating_curve(logits, target, tax, from_logits=True),
              "sharper": ts.metrics.operating_curve(2 * logits, target, tax, from_logits=True)}
    points = {"argmax": ts.metrics.lca_metrics(logits, target, tax)}
    fig = plots.plot_operating_curve(curves, points=points, title="t")
    ax = fig.axes[0]
    area = curves["model"].area("depth_recall", "correct").item()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == f"model (area {area:.3f})" and "argmax" in labels
    # the solid line of the first curve is the envelope: its right end is the front's last point
    front = curves["model"].front("depth_recall", "correct")
    xs = np.concatenate([ln.get_xdata() for ln in ax.get_lines()[:3]]).astype(float)
    assert np.nanmax(xs) == pytest.approx(front["x"].max().item())
    fig.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 5000
    plots.plot_operating_curve(curves["model"], x="info_recall", y="info_precision")
    with pytest.raises(KeyError, match="no metric 'recall'"):
        plots.plot_operating_curve(curves, x="recall")


def test_plot_tradeoff_and_severity_histogram(tmp_path):
    tax, logits, target = _eval_case()
    crm = -ts.conditional_risk(logits, tax, from_logits=True)
    results = {"argmax": ts.metrics.report(logits, target, tax), "CRM": ts.metrics.report(crm, target, tax),
               "seeds": {"top1_error": (0.5, 0.02), "mistake_severity": (2.0, 0.1)}}
    fig = plots.plot_tradeoff(results, title="trade-off")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["argmax", "CRM", "seeds"]
    with pytest.raises(KeyError, match="has no 'mean_hierarchical_distance@5'"):
        plots.plot_tradeoff(results, y="mean_hierarchical_distance@5")
    fig = plots.plot_severity_histogram({"argmax": logits, "CRM": crm}, target, tax)
    ax = fig.axes[0]
    # the bars of a model sum to its top-1 error
    heights = [p.get_height() for p in ax.patches]
    n_values = len(ax.get_xticks())
    assert sum(heights[:n_values]) == pytest.approx(ts.metrics.topk_error(logits, target).item())
    assert sum(heights[n_values:]) == pytest.approx(ts.metrics.topk_error(crm, target).item())
    fig.savefig(tmp_path / "hist.png")
    nodes = ts.decision.predict_node(logits, tax, from_logits=True)
    plots.plot_severity_histogram(nodes, target, tax, distance="path_length")


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_names_matplotlib_cannot_draw_are_drawn_literally(fmt):
    # issue 11 item 25: '$x^$' was parsed as mathtext (an error while drawing), '日本' printed a
    # warning from inside matplotlib with its file path; '\\' and a single '$' must stay as written
    import io
    import warnings

    names = ["$x^$", "日本 cat", "a$b", "us$ $2", "back\\slash", "plain"]
    tax = ts.Taxonomy.from_edges([("r", n) for n in names])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = plots.plot_matrix(ts.class_distances(tax), tax, title="$^ title")
        fig.savefig(io.BytesIO(), format=fmt)
    assert [w.category for w in caught] == [plots.LabelWarning], [str(w.message) for w in caught]
    assert caught[0].filename == __file__  # the caller's line, not a path inside matplotlib or taxosmooth
    assert "'日本 cat' as '\\\\u65e5\\\\u672c cat'" in str(caught[0].message)
    # what matplotlib shows after its own '\$' unescaping is the name as written
    shown = [t.get_text().replace("\\$", "$") for t in fig.axes[0].get_yticklabels()]
    order = plots.tree_order(tax)
    assert shown == [names[i] if names[i] != "日本 cat" else "\\u65e5\\u672c cat" for i in order]
