"""Plots: a class matrix as a heatmap in tree order, with the taxonomy drawn beside it.

Needs matplotlib (``pip install 'taxosmooth[plot]'``); it is imported only when
a plot is drawn. The functions draw on ``matplotlib.figure.Figure`` objects and
never touch ``pyplot``'s global state, so they work without a display.

The dendrogram is drawn straight from the compiled tree: leaf ``k`` of the DFS
order sits at position ``k`` (the centre of heatmap row/column ``k``), an
internal node midway between its first and last child, and each node at a
height: by default the tree distance of two classes whose lowest common ancestor
it is, so that the dendrogram and the heatmap of that distance tell the same
story (two classes merge at the height of their distance).

Examples
--------
>>> from taxosmooth.data import load_animals
>>> from taxosmooth import soft_targets
>>> tax = load_animals()
>>> fig = plot_matrix(soft_targets(tax, beta=4.0), tax, title="soft targets")  # doctest: +SKIP
>>> fig.savefig("targets.png")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    import torch
    from matplotlib.axes import Axes
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from matplotlib.typing import ColorType
    from numpy.typing import ArrayLike

    from taxosmooth.distances import Source
    from taxosmooth.metrics.curves import OperatingCurve
    from taxosmooth.taxonomy import Taxonomy

__all__ = [
    "LabelWarning",
    "tree_order",
    "dendrogram_coordinates",
    "dendrogram_segments",
    "plot_dendrogram",
    "plot_heatmap",
    "plot_matrix",
]

#: at most this many classes get their names written beside the heatmap
MAX_LABELS = 80
#: at most this many classes get their values written in the cells
MAX_ANNOTATED = 12
#: larger matrices are drawn as averages of k x k blocks (a figure has fewer pixels than that)
MAX_CELLS = 2000


class LabelWarning(UserWarning):
    """A class name (or title) was changed to be drawn: characters no installed font can draw.

    Names are drawn as text, never as mathtext (a ``$`` is a dollar sign);
    a character without a glyph in the fonts matplotlib would use is drawn as
    its ``\\u`` escape (four hex digits), and this warning names the label.
    """


@functools.lru_cache(maxsize=8)
def _glyphs(families: tuple, _generic: tuple = ()) -> frozenset:
    """Code points that the fonts of ``families`` (matplotlib's fallback list) can draw."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    prop = font_manager.FontProperties(family=list(families))
    try:  # the fallback list matplotlib itself draws with (>= 3.6)
        paths = font_manager.fontManager._find_fonts_by_props(prop)
    except AttributeError:  # pragma: no cover - older matplotlib
        paths = [font_manager.findfont(prop)]
    codes: set = set()
    for path in paths:
        codes.update(FT2Font(str(path)).get_charmap())
    return frozenset(codes)


def drawable_labels(texts, what: str = "class name") -> list[str]:
    """``texts`` as matplotlib will draw them literally: ``$`` escaped, glyph-less characters as ``\\u`` escapes.

    Warns once (:class:`LabelWarning`) naming the labels that were changed.
    """
    from matplotlib import rcParams

    families = rcParams["font.family"]
    families = (families,) if isinstance(families, str) else tuple(families)
    # the generic families (sans-serif ...) resolve through their own lists: part of the cache key
    # a computed key: matplotlib's stub types rcParams' keys as literals
    generic = tuple(tuple(rcParams[f"font.{g}"]) for g in families if f"font.{g}" in rcParams)  # type: ignore[index]
    glyphs = _glyphs(families, generic)
    out, changed = [], []
    for text in texts:
        text = str(text)
        shown = "".join(c if c == " " or ord(c) in glyphs else f"\\u{ord(c):04x}" for c in text)
        if shown != text:
            changed.append((text, shown))
        # mathtext reads text between two '$' as math; an escaped '\\$' is drawn as '$'
        out.append(shown.replace("$", "\\$"))
    if changed:
        shown = ", ".join(f"{a!r} as {b!r}" for a, b in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        warnings.warn(
            f"{len(changed)} {what}(s) have characters that the font ({', '.join(families)}) cannot draw; "
            f"drawn as escapes: {shown}", LabelWarning, stacklevel=3,
        )
    return out


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "taxosmooth's plots need matplotlib, which is not installed: pip install 'taxosmooth[plot]'"
        ) from None
    return Figure


def tree_order(tax: Taxonomy) -> np.ndarray:
    """Class indices (logit order) listed in the tree's depth-first leaf order.

    ``matrix[np.ix_(order, order)]`` puts a class-order matrix in tree order,
    where every subtree is a contiguous block.
    """
    return np.asarray(tax.compiled.position_class)


def _node_heights(tax, node_height) -> np.ndarray:
    c = tax.compiled
    if isinstance(node_height, str):
        if node_height == "height":
            h = c.height.astype(np.float64)
        elif node_height == "depth":
            # D - depth(v): lca_depth_complement, the distance files of Bertinetto et al.
            h = float(c.depth[c.leaf_node].max()) - c.depth.astype(np.float64)
        elif node_height == "weighted_depth":
            h = float(c.weighted_depth[c.leaf_node].max()) - c.weighted_depth
        else:
            raise ValueError(f"node_height must be 'height', 'depth', 'weighted_depth' or an array (N,), got {node_height!r}")
        h = np.array(h, dtype=np.float64)
    else:
        h = np.array(node_height, dtype=np.float64)
        if h.shape != (c.num_nodes,):
            raise ValueError(f"node_height must have one value per node, shape ({c.num_nodes},), got {h.shape}")
        if not np.all(np.isfinite(h)):
            raise ValueError("node_height must be finite")
    h[c.is_leaf] = 0.0  # leaves touch the heatmap
    return h


def dendrogram_coordinates(tax: Taxonomy, node_height: str | ArrayLike = "height") -> tuple[np.ndarray, np.ndarray]:
    """Where each node is drawn: ``(position, height)``, two float arrays ``(N,)`` by node id.

    ``position`` of the leaf at DFS position ``k`` is ``k``; an internal node
    sits midway between its first and last child. ``node_height`` is
    ``"height"`` (edges down to the deepest leaf), ``"depth"`` (``D - depth``),
    ``"weighted_depth"`` (the same with edge weights) or an array ``(N,)``
    (e.g. :func:`taxosmooth.node_distance`); leaves are always at 0.
    """
    c = tax.compiled
    n = c.num_nodes
    height = _node_heights(tax, node_height)
    pos = np.zeros(n, dtype=np.float64)
    pos[c.leaf_node] = np.arange(c.num_classes, dtype=np.float64)
    last_child = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_child, c.parent[1:], np.arange(1, n))
    # children come after their parent in pre-order; the first child of v is v + 1
    for level in reversed(c.levels):
        inner = level[last_child[level] >= 0]
        pos[inner] = 0.5 * (pos[inner + 1] + pos[last_child[inner]])
    return pos, height


def dendrogram_segments(tax: Taxonomy, node_height: str | ArrayLike = "height",
                        leaf_stems: bool = True) -> np.ndarray:
    """Line segments of the dendrogram, ``(M, 2, 2)`` as ``[[height, position], [height, position]]``.

    One segment from each node to its parent's height (at the node's
    position), and one joining the first and last child of every internal
    node (at the node's height). ``leaf_stems=False`` leaves out the segments
    of the leaves themselves (at thousands of classes they only fill a band).
    """
    c = tax.compiled
    pos, height = dendrogram_coordinates(tax, node_height)
    n = c.num_nodes
    v = np.arange(1, n)
    if not leaf_stems:
        v = v[~c.is_leaf[v]]
    p = c.parent[v]
    stems = np.stack([np.stack([height[p], pos[v]], 1), np.stack([height[v], pos[v]], 1)], 1)
    last_child = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_child, c.parent[1:], np.arange(1, n))
    inner = np.flatnonzero(last_child >= 0)
    bars = np.stack(
        [np.stack([height[inner], pos[inner + 1]], 1), np.stack([height[inner], pos[last_child[inner]]], 1)], 1
    )
    return np.concatenate([stems, bars])


def plot_dendrogram(tax: Taxonomy, ax: Axes, orientation: str = "left", node_height: str | ArrayLike = "height",
                    color: ColorType = "0.25", linewidth: float | None = None, leaf_stems: bool | str = "auto",
                    rasterized: bool | None = None) -> LineCollection:
    """Draw the taxonomy as a dendrogram on ``ax``; returns the ``LineCollection``.

    Leaf ``k`` of the DFS order is at position ``k``, so the dendrogram lines
    up with :func:`plot_heatmap` on the shared axis. ``orientation`` says where
    the root is: ``"left"`` (leaves on the right, positions top to bottom) or
    ``"top"`` (leaves at the bottom, positions left to right). ``leaf_stems``:
    draw the leaves' own segments (``"auto"``: up to 200 classes).
    """
    _require_matplotlib()
    from matplotlib.collections import LineCollection

    if orientation not in ("left", "top"):
        raise ValueError(f"orientation must be 'left' or 'top', got {orientation!r}")
    n_classes = tax.num_classes
    if leaf_stems == "auto":
        leaf_stems = n_classes <= 200
    seg = dendrogram_segments(tax, node_height, leaf_stems=bool(leaf_stems))
    if linewidth is None:
        linewidth = 1.2 if n_classes <= 60 else 0.6 if n_classes <= 300 else 0.3
    if rasterized is None:
        rasterized = len(seg) > 2000
    if orientation == "top":
        seg = seg[:, :, ::-1]
    # an (n, 2, 2) array is a sequence of segments (the stub wants a Sequence)
    lines = LineCollection(seg, colors=color,  # type: ignore[arg-type]
                           linewidths=linewidth, rasterized=rasterized, capstyle="projecting")
    ax.add_collection(lines)
    top = float(seg[..., 1 if orientation == "top" else 0].max()) if len(seg) else 1.0
    top = top if top > 0 else 1.0
    span = (-0.5, n_classes - 0.5)
    if orientation == "left":
        ax.set_xlim(top * 1.03, 0.0)  # root on the left, leaves touching the heatmap on the right
        ax.set_ylim(span[1], span[0])  # position 0 at the top, like the heatmap's first row
    else:
        ax.set_ylim(0.0, top * 1.03)
        ax.set_xlim(*span)
    ax.set_axis_off()
    return lines


def plot_heatmap(
    matrix: ArrayLike,
    ax: Axes,
    order: np.ndarray | None = None,
    color_scale: str = "linear",
    cmap: str | Colormap = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    rasterized: bool = True,
) -> AxesImage:
    """Draw a ``(C, C)`` matrix on ``ax`` (rows top to bottom), optionally reordered; returns the image.

    Cell ``(i, j)`` is centred at ``(j, i)``. ``order`` (e.g. :func:`tree_order`)
    reorders rows and columns alike. Above :data:`MAX_CELLS` classes the image
    shows the means of ``k x k`` blocks (more cells than a figure has pixels).
    ``color_scale`` is ``"linear"`` or ``"log"`` (zeros then show in the
    colormap's lowest colour).
    """
    _require_matplotlib()
    from matplotlib import colors

    m = _as_array(matrix)
    if order is not None:
        m = m[np.ix_(order, order)]
    n = m.shape[0]
    # more cells than pixels: average blocks of k x k cells; the image keeps the cell coordinates
    k = -(-n // MAX_CELLS)
    if k > 1:
        annotate = False
        pad = (-n) % k
        if pad:
            m = np.pad(m, ((0, pad), (0, pad)), mode="edge")
        b = m.shape[0] // k
        m = m.reshape(b, k, b, k).mean(axis=(1, 3))
    if color_scale == "log":
        positive = m[m > 0]
        lo = float(positive.min()) if positive.size else 1e-12
        hi = float(m.max()) if positive.size else 1.0
        norm: colors.Normalize = colors.LogNorm(vmin=vmin or lo, vmax=vmax or max(hi, lo * 10))
    elif color_scale == "linear":
        norm = colors.Normalize(vmin=float(m.min()) if vmin is None else vmin, vmax=float(m.max()) if vmax is None else vmax)
    else:
        raise ValueError(f"color_scale must be 'linear' or 'log', got {color_scale!r}")
    cm = _colormap(cmap)
    image = ax.imshow(
        np.ma.masked_less_equal(m, 0) if color_scale == "log" else m,
        cmap=cm, norm=norm, aspect="auto", origin="upper",
        interpolation="nearest" if n <= 400 else "antialiased", rasterized=rasterized,
        extent=(-0.5, k * m.shape[0] - 0.5, k * m.shape[0] - 0.5, -0.5),
    )
    if annotate:
        fontsize = 7 if n > 8 else 8
        for (i, j), value in np.ndenumerate(m):
            r, g, b, _ = cm(norm(value)) if value > 0 or color_scale == "linear" else cm(0.0)
            light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
            ax.text(j, i, _short(value), ha="center", va="center", fontsize=fontsize, color="black" if light else "white")
    return image


def plot_matrix(
    matrix: ArrayLike,
    tax: Taxonomy | None = None,
    classes: Sequence[Hashable] | None = None,
    *,
    title: str | None = None,
    colorbar_label: str | None = None,
    node_height: str | ArrayLike = "height",
    labels: str | bool = "auto",
    annotate: str | bool = "auto",
    color_scale: str = "auto",
    cmap: str | Colormap = "viridis",
    row_label: str = "true class",
    column_label: str = "class",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A class matrix as a heatmap in tree order, with the taxonomy as dendrograms on the left and top.

    Parameters
    ----------
    matrix : array_like or torch.Tensor (C, C)
        In the class order of ``tax`` (``tax.classes``), or of ``classes`` when given.
    tax : Taxonomy, optional
        Reorders the matrix in tree order and draws the tree. Without it the
        matrix is drawn as given, without dendrograms.
    classes : sequence, optional
        The class of each row of ``matrix`` when that is not ``tax.classes``
        (each must be a class of ``tax``; all of them, once).
    title, colorbar_label : str, optional
    node_height : "height", "depth", "weighted_depth" or array (N,), default "height"
        Heights of the dendrogram's nodes (see :func:`dendrogram_coordinates`).
    labels : "auto", True or False
        Write the class names beside the heatmap; ``"auto"``: up to :data:`MAX_LABELS` classes.
    annotate : "auto", True or False
        Write each value in its cell; ``"auto"``: up to :data:`MAX_ANNOTATED` classes.
    color_scale : "auto", "linear" or "log"
        ``"auto"`` is ``"log"`` when the positive values span more than two
        decades (soft targets at large ``beta``), else ``"linear"``.
    cmap : str or Colormap, default "viridis"
    row_label, column_label : str
        Axis titles (rows are the true class).
    figsize : (float, float), optional
        Inches; by default it grows with the number of classes (up to 10 x 10).

    Returns
    -------
    matplotlib.figure.Figure
    """
    Figure = _require_matplotlib()
    m = _as_array(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square (C, C), got shape {m.shape}")
    n = m.shape[0]
    if n == 0:
        raise ValueError("matrix is empty")
    names = None
    order = None
    if tax is not None:
        if classes is not None and list(classes) != list(tax.classes):
            classes = list(classes)
            if len(classes) != tax.num_classes or len(set(classes)) != len(classes):
                raise ValueError(f"classes must list each of the taxonomy's {tax.num_classes} classes once, got {len(classes)} names")
            rows = np.array([tax.class_index(c) for c in classes])
            inv = np.empty(n, dtype=np.int64)
            inv[rows] = np.arange(n)
            m = m[np.ix_(inv, inv)]  # now in tax.classes order
        if tax.num_classes != n:
            raise ValueError(f"matrix has {n} classes but the taxonomy has {tax.num_classes}")
        order = tree_order(tax)
        names = [str(tax.classes[i]) for i in order]
    elif classes is not None:
        names = [str(c) for c in classes]
        if len(names) != n:
            raise ValueError(f"{len(names)} class names for a {n}x{n} matrix")
    show_labels = names is not None and (n <= MAX_LABELS if labels == "auto" else bool(labels))
    if show_labels:
        names = drawable_labels(names)
    if title:
        title = drawable_labels([title], "title")[0]
    show_values = n <= MAX_ANNOTATED if annotate == "auto" else bool(annotate)
    if color_scale == "auto":
        positive = m[m > 0]
        spread = float(positive.max() / positive.min()) if positive.size else 1.0
        color_scale = "log" if spread > 100 and not np.any(m[~np.eye(n, dtype=bool)] == 0) else "linear"

    heat_in = figsize[0] * 0.7 if figsize else float(np.clip(n * 0.17, 4.5, 8.0))
    tree_in = min(1.8, 0.25 * heat_in)
    # without a tree: no dendrograms, a strip above the heatmap for the colour bar
    left_in, top_in = (tree_in, tree_in) if tax is not None else (0.0, 0.7)
    # show_labels: the names are set
    label_in = (0.13 * max(len(s) for s in cast("list[str]", names)) + 0.3) if show_labels else 0.35
    width = left_in + heat_in + label_in + 0.4
    height = top_in + heat_in + label_in + (0.5 if title else 0.2)
    fig = Figure(figsize=figsize or (width, height), dpi=150 if n > 100 else 100)
    # absolute layout (in inches, then fractions): corner colorbar, top tree, left tree, heatmap
    left, bottom = 0.2, label_in

    def box(x, y, w, h):
        return [x / width, y / height, w / width, h / height]

    ax_heat = fig.add_axes(box(left + left_in, bottom, heat_in, heat_in))
    image = plot_heatmap(m, ax_heat, order=order, color_scale=color_scale, cmap=cmap, annotate=show_values)
    if tax is not None:
        ax_left = fig.add_axes(box(left, bottom, tree_in, heat_in), sharey=ax_heat)
        plot_dendrogram(tax, ax_left, "left", node_height)
        ax_top = fig.add_axes(box(left + tree_in, bottom + heat_in, heat_in, tree_in), sharex=ax_heat)
        plot_dendrogram(tax, ax_top, "top", node_height)
        ax_heat.set_ylim(n - 0.5, -0.5)
        ax_heat.set_xlim(-0.5, n - 0.5)
    if tax is not None:
        ax_cbar = fig.add_axes(box(left + 0.1 * tree_in, bottom + heat_in + 0.55 * tree_in, 0.75 * tree_in, 0.1 * tree_in))
    else:
        ax_cbar = fig.add_axes(box(left, bottom + heat_in + 0.2, min(2.0, 0.35 * heat_in), 0.12))
    cbar = fig.colorbar(image, cax=ax_cbar, orientation="horizontal")
    cbar.ax.tick_params(labelsize=6, length=2, pad=1)
    if colorbar_label:
        cbar.ax.set_title(colorbar_label, fontsize=7, pad=3)
    if show_labels:
        fontsize = float(np.clip(heat_in * 72 / n * 0.75, 3.0, 9.0))
        ax_heat.set_yticks(np.arange(n), names, fontsize=fontsize)
        if n > 12:
            ax_heat.set_xticks(np.arange(n), names, fontsize=fontsize, rotation=90)
        else:
            ax_heat.set_xticks(np.arange(n), names, fontsize=fontsize, rotation=45, ha="right", rotation_mode="anchor")
        ax_heat.yaxis.tick_right()
        ax_heat.tick_params(length=0, pad=2)
        ax_heat.set_xlabel(column_label, fontsize=8)
    else:
        ax_heat.set_xticks([])
        ax_heat.set_yticks([])
        ax_heat.set_xlabel(f"{column_label} ({n} in tree order)" if tax is not None else f"{column_label} ({n})", fontsize=8)
    ax_heat.set_ylabel(row_label, fontsize=8)
    ax_heat.yaxis.set_label_position("right")
    for spine in ax_heat.spines.values():
        spine.set_linewidth(0.5)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / height, va="top")
    return fig


def _colormap(cmap):
    from matplotlib import colormaps

    cm = colormaps[cmap].copy() if isinstance(cmap, str) else cmap.copy()
    cm = cm.with_extremes(bad=cm(0.0))
    return cm


def _as_array(matrix) -> np.ndarray:
    try:
        import torch

        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().cpu()
            matrix = matrix.numpy() if matrix.dtype in (torch.float32, torch.float64) else matrix.double().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    m = np.asarray(matrix)
    # beyond the pixels of a figure float32 is plenty, and halves the memory of a large matrix
    return m.astype(np.float32 if m.size > MAX_CELLS**2 else np.float64, copy=False)


def _short(value: float) -> str:
    if value == 0:
        return "0"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.0e}"


# ---------------------------------------------------------------------- evaluation plots
# (operating curves, trade-offs between error and mistake severity, severities)

__all__ += ["plot_operating_curve", "plot_tradeoff", "plot_severity_histogram"]

#: axis labels of the per-sample metrics of an operating curve and of report()
METRIC_LABELS = {
    "exact": "exact (fraction answering the label)",
    "correct": "correct (answer on the label's path)",
    "depth_recall": "depth recall",
    "depth_precision": "depth precision",
    "info_recall": "information recall",
    "info_precision": "information precision",
    "top1_error": "top-1 error",
    "mistake_severity": "mistake severity",
}


def _figure(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    Figure = _require_matplotlib()
    fig = Figure(figsize=figsize or (5.5, 4.5), layout="constrained")
    return fig, fig.subplots()


def _named(obj, kind) -> dict:
    return {"": obj} if isinstance(obj, kind) else dict(obj)


def plot_operating_curve(curves: OperatingCurve | Mapping[str, OperatingCurve], x: str = "depth_recall",
                         y: str = "correct", *, points: Mapping[str, Mapping[str, Any]] | None = None,
                         ax: Axes | None = None, title: str | None = None,
                         figsize: tuple[float, float] | None = None) -> Figure:
    """Draw the Pareto front of one or several operating curves (:func:`taxosmooth.metrics.operating_curve`).

    Each curve's front of ``(curve[x], curve[y])`` is drawn as the step
    envelope whose area :func:`~taxosmooth.metrics.pareto_integrate` measures
    (given in the legend), solid where the threshold is at least 1/2 (the
    answers form a path from the root) and dashed below, as in Valmadre
    (NeurIPS 2022).

    Parameters
    ----------
    curves : OperatingCurve or dict of name → OperatingCurve
    x, y : str
        Fields of the curves (:data:`taxosmooth.metrics.LCA_FIELDS`); default
        correct against depth recall.
    points : dict of name → dict, optional
        Single decisions to mark, e.g. ``{"argmax": ts.metrics.lca_metrics(probs, y, tax)}``.
    ax : matplotlib Axes, optional
        Draw there; by default on a new ``Figure``.
    title : str, optional
    figsize : (float, float), optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from taxosmooth.metrics.curves import OperatingCurve, pareto_integrate

    curves = _named(curves, OperatingCurve)
    if not curves:
        raise ValueError("curves is empty: pass an OperatingCurve or a dict of them")
    fig, ax = _figure(ax, figsize)
    colors = [f"C{i % 10}" for i in range(len(curves))]
    for (name, curve), color in zip(curves.items(), colors):
        if not isinstance(curve, OperatingCurve):
            raise TypeError(f"curves[{name!r}] must be an OperatingCurve, got {type(curve).__name__}")
        front = curve.front(x, y)
        fx, fy, ft = (np.asarray(front[k].cpu()) for k in ("x", "y", "thresholds"))
        area = float(pareto_integrate(curve[x], curve[y]))
        # the envelope: height fy[k] over (fx[k-1], fx[k]]
        sx = np.repeat(np.concatenate([[0.0], fx]), 2)[1:-1]
        sy = np.repeat(fy, 2)
        label = f"{name} (area {area:.3f})" if name else f"area {area:.3f}"
        high = np.repeat(ft >= 0.5, 2)
        ax.plot(sx, sy, color=color, linestyle="--", linewidth=1)  # the whole envelope; thresholds >= 1/2 solid
        ax.plot(np.where(high, sx, np.nan), np.where(high, sy, np.nan), color=color, label=label)
        ax.plot(fx, fy, linestyle="none", marker=".", color=color, markersize=3)
    for i, (name, values) in enumerate((points or {}).items()):
        px, py = (float(values[k]) for k in (x, y))
        ax.plot([px], [py], marker="os^Dv"[i % 5], linestyle="none", markerfacecolor="none", color="k", label=name)
    ax.set_xlabel(METRIC_LABELS.get(x, x))
    ax.set_ylabel(METRIC_LABELS.get(y, y))
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _mean_std(value) -> tuple[float, float]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return float(value[0]), float(value[1])
    return float(value), 0.0


def plot_tradeoff(results: dict, x: str = "top1_error", y: str = "mistake_severity", *, ax: Axes | None = None,
                  title: str | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """One point per method: top-1 error against mistake severity (or any two entries of :func:`~taxosmooth.metrics.report`).

    Lower is better on both axes of the defaults: a method in the lower left
    makes fewer and milder mistakes.

    Parameters
    ----------
    results : dict of method name → dict
        Each method's metrics, e.g. ``report(...)`` output; a value may be a
        ``(mean, std)`` pair (drawn with error bars).
    x, y : str
        Keys of the dicts; e.g. ``y="mean_hierarchical_distance@5"``.
    ax, title, figsize
        As in :func:`plot_operating_curve`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not results:
        raise ValueError("results is empty: pass {method name: its metrics}")
    fig, ax = _figure(ax, figsize)
    for i, (name, values) in enumerate(results.items()):
        missing = [k for k in (x, y) if k not in values]
        if missing:
            raise KeyError(f"results[{name!r}] has no {', '.join(map(repr, missing))} (keys: {', '.join(map(str, values))})")
        (mx, sx), (my, sy) = _mean_std(values[x]), _mean_std(values[y])
        ax.errorbar([mx], [my], xerr=[sx] if sx else None, yerr=[sy] if sy else None, marker="osD^vP*X"[i % 8],
                    color=f"C{i % 10}", linestyle="none", capsize=2, label=str(name))
    ax.set_xlabel(METRIC_LABELS.get(x, x))
    ax.set_ylabel(METRIC_LABELS.get(y, y))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_severity_histogram(scores: torch.Tensor | Mapping[str, torch.Tensor], target: torch.Tensor, source: Source,
                            *, distance: str | None = None, coarse_labels: bool = False, ax: Axes | None = None,
                            title: str | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """Histogram of the severities of the mistakes: how far the wrong top-1 predictions are from the truth.

    One bar group per distinct distance; each model's bars give the fraction of
    its samples that are mistakes at that distance (so the bars of a model sum
    to its top-1 error). Distances, coarse labels and node predictions as in
    :func:`taxosmooth.metrics.mistake_severity`.

    Parameters
    ----------
    scores : Tensor (N, C) or LongTensor (N,) of predicted target ids, or dict of name → either
    target : LongTensor (N,)
    source : Taxonomy or Tensor (C, C)
    distance, coarse_labels
        As in :func:`~taxosmooth.metrics.mistake_severity`.
    ax, title, figsize
        As in :func:`plot_operating_curve`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from taxosmooth.metrics import functional as F
    from taxosmooth.metrics._pairs import PairDistances

    pairs = PairDistances(source, distance)
    models = dict(scores) if isinstance(scores, dict) else {"": scores}
    if not models:
        raise ValueError("scores is empty")
    dists = {}
    for name, s in models.items():
        pred, label = F._predicted(s, target, pairs, coarse_labels, nodes=True)
        wrong = ~pairs.correct(label, pred)
        d = pairs(label, pred)[wrong].cpu().numpy()
        dists[name] = (d, int(label.shape[0]))
    values = np.unique(np.concatenate([d for d, _ in dists.values()] + [np.zeros(0)]))
    fig, ax = _figure(ax, figsize)
    width = 0.8 / len(dists)
    pos = np.arange(len(values))
    for i, (name, (d, n)) in enumerate(dists.items()):
        frac = np.array([np.count_nonzero(d == v) / n if n else 0.0 for v in values])
        mean = float(d.mean()) if d.size else float("nan")
        label = f"{name + ': ' if name else ''}{frac.sum():.1%} wrong, mean severity {mean:.3g}"
        ax.bar(pos + (i - (len(dists) - 1) / 2) * width, frac, width=width, color=f"C{i % 10}", label=label)
    ax.set_xticks(pos, [_short(float(v)) for v in values])
    ax.set_xlabel(f"distance of the mistake ({pairs.distance})")
    ax.set_ylabel("fraction of samples")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig
