"""linear_loss: the loss of ``F.linear(hidden, weight, bias)`` in chunks of rows equals the materialised loss.

Every loss × target kind × reduction, float64: the value and the gradients of hidden, weight and bias equal
``loss(F.linear(h, W, b), t)`` to 1e-10, for chunks that do not divide N, chunks of one row, and chunks of N
rows or more. No tensor of N × C elements is made (a dispatch mode records every tensor an op returns).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from _spawn import run_ranks
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import taxosmooth as ts

N, H = 7, 5
CHUNKS = (1, 3, 7, 100, None)
TOL = dict(rtol=1e-10, atol=1e-10)

NESTED = {
    "life": {
        "animal": {"mammal": ["horse", "zebra", "cat"], "sea": ["whale", {"fish": ["shark", "cod"]}]},
        "plant": ["oak", "fir"],
        "fungus": None,
    }
}


def _tax() -> ts.Taxonomy:
    # a class order that is not the tree's (depth-first) order: the losses permute internally
    order = ["cod", "oak", "horse", "fungus", "whale", "zebra", "fir", "shark", "cat"]
    return ts.Taxonomy.from_nested(NESTED, classes=order)


TAX = _tax()
C = TAX.num_classes


COST = ts.cost_matrix(TAX)
SOFT = ts.soft_targets(TAX, 2.0)

#: every taxosmooth loss (taxonomy and matrix forms), SoftTargetCrossEntropy without a matrix, and torch's;
#: whether it takes coarse labels (a taxonomy's)
FACTORIES = [
    ("SoftTargetCrossEntropy(matrix)", lambda kw: ts.SoftTargetCrossEntropy(SOFT, **kw), False),
    ("SoftTargetCrossEntropy", lambda kw: ts.SoftTargetCrossEntropy(**kw), False),
    ("HierarchicalSoftLabelLoss", lambda kw: ts.HierarchicalSoftLabelLoss(TAX, 2.0, mix=0.8, **kw), True),
    ("HXELoss", lambda kw: ts.HXELoss(TAX, 0.5, **kw), True),
    ("HXELoss(normalize)", lambda kw: ts.HXELoss(TAX, 0.3, weighting="height", normalize=True, **kw), True),
    ("ExpectedCostLoss", lambda kw: ts.ExpectedCostLoss(TAX, **kw), True),
    ("ExpectedCostLoss(matrix)", lambda kw: ts.ExpectedCostLoss(COST, **kw), False),
    ("TreeWassersteinLoss", lambda kw: ts.TreeWassersteinLoss(TAX, **kw), True),
    ("PairwiseCostLoss", lambda kw: ts.PairwiseCostLoss(TAX, **kw), True),
    ("PairwiseCostLoss(matrix)", lambda kw: ts.PairwiseCostLoss(COST, **kw), False),
    ("nn.CrossEntropyLoss", lambda kw: nn.CrossEntropyLoss(**kw), False),
]


def _losses(**kw):
    """Every loss of :data:`FACTORIES` that takes the options ``kw``."""
    return [make(kw) for _, make, coarse in FACTORIES if coarse or not kw.get("coarse_labels")]


CLASS_WEIGHT = torch.linspace(0.5, 2.0, C, dtype=torch.float64)


def _targets(kind: str, g: torch.Generator, rows: tuple = (N,)):
    """(target, loss options) of one target kind."""
    m = int(torch.tensor(rows).prod())
    ids = torch.randint(0, C, (m,), generator=g)
    if kind == "ids":
        return ids.reshape(rows), {}
    if kind == "ignore":
        ids[::3] = -100
        return ids.reshape(rows), {}
    if kind == "weight":
        return ids.reshape(rows), {"weight": CLASS_WEIGHT}
    if kind == "smoothing":
        ids[1] = -100
        return ids.reshape(rows), {"label_smoothing": 0.2, "weight": CLASS_WEIGHT}
    if kind == "prob":
        p = torch.rand(m, C, generator=g, dtype=torch.float64) ** 3
        return (p / p.sum(1, keepdim=True)).reshape(rows + (C,)), {}
    if kind == "prob_smoothing":
        p = torch.rand(m, C, generator=g, dtype=torch.float64)
        return (p / p.sum(1, keepdim=True)).reshape(rows + (C,)), {"label_smoothing": 0.1, "weight": CLASS_WEIGHT}
    if kind == "coarse":
        node_ids = torch.randint(0, TAX.num_nodes, (m,), generator=g)
        node_ids[0], node_ids[2] = 0, -100  # the root, an ignored target
        return node_ids.reshape(rows), {"coarse_labels": True, "weight": CLASS_WEIGHT}
    raise AssertionError(kind)


KINDS = ("ids", "ignore", "weight", "smoothing", "prob", "prob_smoothing", "coarse")


def _params(g: torch.Generator, dtype=torch.float64, rows: tuple = (N,)):
    h = torch.randn(rows + (H,), generator=g, dtype=dtype).requires_grad_()
    w = (0.7 * torch.randn(C, H, generator=g, dtype=dtype)).requires_grad_()
    b = (0.3 * torch.randn(C, generator=g, dtype=dtype)).requires_grad_()
    return h, w, b


def _value_and_grads(fn, h, w, b, reduction: str, g: torch.Generator):
    out = fn()
    upstream = torch.randn(out.shape, generator=g, dtype=out.dtype) if reduction == "none" else None
    grads = torch.autograd.grad(out, (h, w, b), upstream)
    return out.detach(), grads


def _materialised(mod, h, w, b, t):
    z = F.linear(h, w, b)
    if h.dim() > 2:  # the class dimension second, as the losses take it
        z = z.movedim(-1, 1)
        t = t.movedim(-1, 1) if t.is_floating_point() else t
    return mod(z, t)


CASES = [pytest.param(i, kind, id=f"{name}-{kind}") for i, (name, _, coarse) in enumerate(FACTORIES) for kind in KINDS
         if coarse or kind != "coarse"]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("index", "kind"), CASES)
def test_equals_the_materialised_loss(index, kind, reduction):
    g = torch.Generator().manual_seed(index * 100 + KINDS.index(kind))
    t, kw = _targets(kind, g)
    mod = FACTORIES[index][1](kw)
    mod.reduction = reduction
    h, w, b = _params(g)
    seed = int(torch.randint(0, 2**31, (), generator=g))
    want, want_grads = _value_and_grads(lambda: _materialised(mod, h, w, b, t), h, w, b, reduction,
                                        torch.Generator().manual_seed(seed))
    assert torch.isfinite(want).all()
    for chunk in CHUNKS:
        got, got_grads = _value_and_grads(lambda: ts.linear_loss(h, w, t, mod, bias=b, chunk_size=chunk), h, w, b,
                                          reduction, torch.Generator().manual_seed(seed))
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want, **TOL, msg=f"value, chunk_size={chunk}")
        for name, x, y in zip(("hidden", "weight", "bias"), got_grads, want_grads):
            torch.testing.assert_close(x, y, **TOL, msg=f"grad {name}, chunk_size={chunk}")
    assert mod.reduction == reduction  # the user's module is not changed


@pytest.mark.parametrize("kind", ["ids", "prob", "coarse"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_extra_dimensions_and_no_bias(kind, reduction):
    """hidden (N, T, H): the rows are flattened; the target (N, T) or (N, T, C); no bias."""
    g = torch.Generator().manual_seed(3)
    t, kw = _targets(kind, g, rows=(3, 4))
    mod = ts.HXELoss(TAX, 0.5, reduction=reduction, **kw)
    h, w, _ = _params(g, rows=(3, 4))
    zero = torch.zeros(C, dtype=torch.float64, requires_grad=True)
    want, want_grads = _value_and_grads(lambda: _materialised(mod, h, w, zero, t), h, w, zero, reduction,
                                        torch.Generator().manual_seed(1))
    got, got_grads = _value_and_grads(lambda: ts.linear_loss(h, w, t, mod, chunk_size=5) + 0 * zero.sum(), h, w,
                                      zero, reduction, torch.Generator().manual_seed(1))
    assert got.shape == want.shape == ((3, 4) if reduction == "none" else ())
    torch.testing.assert_close(got, want, **TOL)
    for x, y in zip(got_grads[:2], want_grads[:2]):
        torch.testing.assert_close(x, y, **TOL)


def test_gradients_of_some_inputs_only():
    g = torch.Generator().manual_seed(5)
    t, _ = _targets("ids", g)
    mod = ts.HierarchicalSoftLabelLoss(TAX, 2.0)
    h, w, b = _params(g)
    frozen_w = w.detach()
    want = torch.autograd.grad(mod(F.linear(h, frozen_w, b), t), (h, b))
    got = torch.autograd.grad(ts.linear_loss(h, frozen_w, t, mod, bias=b, chunk_size=2), (h, b))
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, **TOL)
    (gw,) = torch.autograd.grad(ts.linear_loss(h.detach(), w, t, mod, chunk_size=2), (w,))
    torch.testing.assert_close(gw, torch.autograd.grad(mod(F.linear(h.detach(), w), t), (w,))[0], **TOL)


def test_no_grad_and_inputs_without_grad():
    g = torch.Generator().manual_seed(6)
    t, _ = _targets("weight", g)
    mod = ts.TreeWassersteinLoss(TAX, weight=CLASS_WEIGHT)
    h, w, b = (x.detach() for x in _params(g))
    want = mod(F.linear(h, w, b), t)
    torch.testing.assert_close(ts.linear_loss(h, w, t, mod, bias=b, chunk_size=2), want, **TOL)
    hg, wg, bg = _params(g)
    with torch.no_grad():
        out = ts.linear_loss(hg, wg, t, mod, bias=bg, chunk_size=2)
    assert not out.requires_grad
    torch.testing.assert_close(out, mod(F.linear(hg, wg, bg), t), **TOL)


def test_every_target_ignored_is_nan_with_zero_gradient():
    g = torch.Generator().manual_seed(7)
    t = torch.full((N,), -100)
    for mod in (ts.HXELoss(TAX, 0.5), nn.CrossEntropyLoss(), ts.HierarchicalSoftLabelLoss(TAX, 2.0, weight=CLASS_WEIGHT)):
        h, w, b = _params(g)
        want = mod(F.linear(h, w, b), t)
        want_grads = torch.autograd.grad(want, (h, w, b))
        got = ts.linear_loss(h, w, t, mod, bias=b, chunk_size=3)
        got_grads = torch.autograd.grad(got, (h, w, b))
        assert torch.isnan(want) and torch.isnan(got)
        for x, y in zip(got_grads, want_grads):
            assert torch.equal(x, torch.zeros_like(x))
            torch.testing.assert_close(x, y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_an_empty_batch(reduction):
    mod = ts.HXELoss(TAX, 0.5, reduction=reduction)
    h = torch.zeros(0, H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(C, H, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(0, dtype=torch.long)
    want = mod(F.linear(h, w), t)
    got = ts.linear_loss(h, w, t, mod)
    torch.testing.assert_close(got, want, equal_nan=True)
    (gw,) = torch.autograd.grad(got.sum(), (w,))
    assert torch.equal(gw, torch.zeros_like(w))


def test_reduced_precision_inputs():
    """bfloat16 hidden and weight: the loss in float32, the gradients in the parameters' dtype, close to the
    float32 loss of the same (rounded) numbers."""
    g = torch.Generator().manual_seed(8)
    t, _ = _targets("ids", g)
    mod = ts.HierarchicalSoftLabelLoss(TAX, 2.0)
    h, w, b = (x.detach().to(torch.bfloat16).requires_grad_() for x in _params(g))
    got = ts.linear_loss(h, w, t, mod, bias=b, chunk_size=3)
    assert got.dtype == torch.float32
    grads = torch.autograd.grad(got, (h, w, b))
    assert [x.dtype for x in grads] == [torch.bfloat16] * 3
    h32, w32, b32 = (x.detach().float().requires_grad_() for x in (h, w, b))
    want = mod(F.linear(h32, w32, b32), t)
    want_grads = torch.autograd.grad(want, (h32, w32, b32))
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    for x, y in zip(grads, want_grads):
        torch.testing.assert_close(x.float(), y, rtol=5e-2, atol=2e-2)


def test_autocast_casts_like_f_linear():
    g = torch.Generator().manual_seed(9)
    t, _ = _targets("ids", g)
    mod = nn.CrossEntropyLoss()
    h, w, b = (x.detach().float().requires_grad_() for x in _params(g))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ts.linear_loss(h, w, t, mod, bias=b, chunk_size=3)
    got.backward()
    assert w.grad is not None and w.grad.dtype == torch.float32
    torch.testing.assert_close(got, mod(F.linear(h, w, b), t).detach(), rtol=3e-2, atol=3e-2)


def test_double_backward_is_refused_with_a_clear_error():
    g = torch.Generator().manual_seed(10)
    t, _ = _targets("ids", g)
    for reduction in ("mean", "none"):
        mod = ts.HXELoss(TAX, 0.5, reduction=reduction)
        h, w, b = _params(g)
        out = ts.linear_loss(h, w, t, mod, bias=b, chunk_size=2).sum()
        (gh,) = torch.autograd.grad(out, (h,), create_graph=True)  # a graph may be made ...
        with pytest.raises(RuntimeError, match="double backward is not supported"):
            gh.sum().backward()  # ... but not differentiated


def test_the_module_form():
    g = torch.Generator().manual_seed(11)
    t, _ = _targets("smoothing", g)
    inner = ts.PairwiseCostLoss(TAX, weight=CLASS_WEIGHT, label_smoothing=0.2)
    crit = ts.LinearLoss(inner, chunk_size=4)
    assert crit.loss is inner and "chunk_size=4" in repr(crit)
    assert [name for name, _ in crit.named_modules()][:2] == ["", "loss"]
    h, w, b = _params(g)
    torch.testing.assert_close(crit(h, w, t, b), inner(F.linear(h, w, b), t), **TOL)
    head = nn.Linear(H, C).double()
    torch.testing.assert_close(crit(h, head.weight, t, head.bias), inner(head(h), t), **TOL)
    assert ts.functional.linear_loss is ts.linear_loss


class _Largest(TorchDispatchMode):
    """The largest number of elements of a tensor that an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:  # a view allocates nothing
            return out
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


@pytest.mark.parametrize("kind", ["ids", "smoothing", "prob", "coarse"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_no_tensor_of_n_times_c_elements(kind, reduction):
    """Memory, without timing or measuring: every op's outputs stay far below N × C elements."""
    n, hid, chunk = 64, 2, 4
    g = torch.Generator().manual_seed(12)
    t, kw = _targets(kind, g, rows=(n,))
    if "prob" in kind:
        t = t.detach()
    for mod in _losses(**kw):
        mod.reduction = reduction
        h = torch.randn(n, hid, dtype=torch.float64, requires_grad=True)
        w = torch.randn(C, hid, dtype=torch.float64, requires_grad=True)
        b = torch.randn(C, dtype=torch.float64, requires_grad=True)
        with _Largest() as seen:
            out = ts.linear_loss(h, w, t, mod, bias=b, chunk_size=chunk)
            out.sum().backward()
        # a chunk's rows against the classes or the nodes (a few of each), hidden and its gradient; never N × C
        bound = max(chunk * 4 * TAX.num_nodes, n * hid)
        assert seen.largest <= bound < n * C, f"{type(mod).__name__}: a tensor of {seen.largest} elements"
        if kind == "prob":  # the target itself is N × C; nothing else of that size
            continue
        with _Largest() as dense:
            _materialised(mod, h, w, b, t).sum().backward()
        assert dense.largest >= n * C  # the check would see the materialised logits


def test_errors_name_the_argument():
    mod = ts.HXELoss(TAX, 0.5)
    h, w, b = (x.detach() for x in _params(torch.Generator().manual_seed(13)))
    t = torch.zeros(N, dtype=torch.long)
    with pytest.raises(ValueError, match=r"hidden must have shape \(N, H\)"):
        ts.linear_loss(h[0], w, t[0], mod)
    with pytest.raises(ValueError, match=r"weight must have shape \(C, H\) with H = 5"):
        ts.linear_loss(h, w[:, :4], t, mod)
    with pytest.raises(ValueError, match=r"weight has 8 rows \(classes\) but HXELoss expects 9 classes"):
        ts.linear_loss(h, w[:8], t, mod, bias=b[:8])
    with pytest.raises(ValueError, match=r"bias must have shape \(C,\) = \(9,\)"):
        ts.linear_loss(h, w, t, mod, bias=b[:3])
    with pytest.raises(TypeError, match="weight has dtype torch.float32 but hidden has torch.float64"):
        ts.linear_loss(h, w.float(), t, mod)
    with pytest.raises(TypeError, match="hidden must be a floating-point tensor"):
        ts.linear_loss(h.long(), w, t, mod)
    with pytest.raises(ValueError, match=r"expected target of shape \(7,\)"):
        ts.linear_loss(h, w, t[:5], mod)
    with pytest.raises(ValueError, match=r"class probabilities and must have shape \(7, 9\)"):
        ts.linear_loss(h, w, torch.full((N, 4), 0.25, dtype=torch.float64), mod)
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        ts.linear_loss(h, w, [0] * N, mod)
    p = torch.full((N, C), 1.0 / C, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"target requires grad.*target.detach\(\)"):
        ts.linear_loss(h, w, p, mod)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"chunk_size must be a positive int.*got {bad}"):
            ts.linear_loss(h, w, t, mod, chunk_size=bad)
    for bad in (2.0, True, "4"):
        with pytest.raises(TypeError, match="chunk_size must be a positive int"):
            ts.linear_loss(h, w, t, mod, chunk_size=bad)
    with pytest.raises(TypeError, match="chunk_size must be a positive int"):
        ts.LinearLoss(mod, chunk_size=1.5)
    with pytest.raises(TypeError, match="loss must be a loss module with a reduction attribute"):
        ts.linear_loss(h, w, t, F.cross_entropy)
    with pytest.raises(TypeError, match="cannot tell how MSELoss averages"):
        ts.linear_loss(h, w, torch.zeros(N, C, dtype=torch.float64), nn.MSELoss())
    # the loss's own checks still run on every chunk, with the loss's name
    with pytest.raises(IndexError, match="HXELoss: target 42 at position"):
        ts.linear_loss(h, w, torch.full((N,), 42), mod, chunk_size=3)
    assert mod.reduction == "mean"  # set to "sum" for the chunks, restored on error too
    with pytest.raises(ValueError, match="linear_loss: weight must have shape"):
        ts.LinearLoss(mod)(h, w.t(), t)


def test_sum_and_none_accept_any_row_separable_loss():
    """reduction="sum" or "none" needs no convention of the mean: nn.MSELoss on the logits works."""
    g = torch.Generator().manual_seed(14)
    h, w, b = _params(g)
    t = torch.randn(N, C, generator=g, dtype=torch.float64)
    for reduction in ("sum",):
        mod = nn.MSELoss(reduction=reduction)
        want = torch.autograd.grad(mod(F.linear(h, w, b), t), (h, w, b))
        got = torch.autograd.grad(ts.linear_loss(h, w, t, mod, bias=b, chunk_size=3), (h, w, b))
        for x, y in zip(got, want):
            torch.testing.assert_close(x, y, **TOL)


# ----------------------------------------------------------------------------- class sharding, two processes
WORLD = 2
SPLIT = (5, 4)  # uneven: rank 0 holds classes [0, 5), rank 1 [5, 9)
TIMEOUT_S = 180


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) forward, identity backward: every rank computes the same (replicated) loss, so the gradient
    of a rank's part is the gradient of the sum (Megatron's ``reduce_from_tensor_model_parallel_region``)."""

    @staticmethod
    def forward(ctx, x, group):
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ShardedCrossEntropy(nn.Module):
    """A minimal vocabulary-parallel cross entropy (Megatron's): logits (N, C_rank), global target ids; each rank
    returns the whole batch's loss. A stand-in for the library's sharded losses."""

    def __init__(self, lo: int, hi: int, num_classes: int, group=None, reduction: str = "mean"):
        super().__init__()
        self.lo, self.hi, self.num_classes = lo, hi, num_classes
        self.process_group, self.reduction, self.ignore_index, self.weight = group, reduction, -100, None

    def forward(self, z, t):
        import torch.distributed as dist

        m = z.detach().amax(1)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=self.process_group)
        zs = z - m[:, None]
        lse = _SumOverRanks.apply(zs.exp().sum(1), self.process_group).log()
        valid = t != self.ignore_index
        own = valid & (t >= self.lo) & (t < self.hi)
        local = (t - self.lo).clamp(0, self.hi - self.lo - 1)
        zt = _SumOverRanks.apply(torch.where(own, zs.gather(1, local[:, None])[:, 0], 0.0), self.process_group)
        rows = torch.where(valid, lse - zt, 0.0)
        if self.reduction == "none":
            return rows
        return rows.sum() if self.reduction == "sum" else rows.sum() / valid.sum()


def _sharded_problem():
    g = torch.Generator().manual_seed(15)
    h = torch.randn(11, H, generator=g, dtype=torch.float64)
    w = torch.randn(C, H, generator=g, dtype=torch.float64)
    b = torch.randn(C, generator=g, dtype=torch.float64)
    t = torch.randint(0, C, (11,), generator=g)
    t[4] = -100
    return h, w, b, t


def _sharded_worker(rank: int, world: int, out_dir: str) -> None:
    import torch.distributed as dist

    h, w, b, t = _sharded_problem()
    lo = sum(SPLIT[:rank])
    hi = lo + SPLIT[rank]
    results = {}
    for reduction in ("mean", "sum", "none"):
        for chunk in (3, None):
            hr = h.clone().requires_grad_()
            wr = w[lo:hi].clone().requires_grad_()
            br = b[lo:hi].clone().requires_grad_()
            loss = _ShardedCrossEntropy(lo, hi, C, group=dist.group.WORLD, reduction=reduction)
            out = ts.linear_loss(hr, wr, t, loss, bias=br, chunk_size=chunk)
            upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
            out.backward(upstream)
            results[(reduction, chunk)] = (out.detach(), hr.grad, wr.grad, br.grad)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.distributed
def test_class_sharded_loss_with_a_process_group(tmp_path):
    """Each rank its weight rows and a loss that meets the other ranks: every rank gets the whole loss, the whole
    hidden gradient (summed over the group), and its rows of the weight and bias gradients."""
    run_ranks(_sharded_worker, WORLD, str(tmp_path), timeout=TIMEOUT_S)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    h, w, b, t = _sharded_problem()
    for (reduction, chunk), _ in per_rank[0].items():
        hh, ww, bb = (x.clone().requires_grad_() for x in (h, w, b))
        out = F.cross_entropy(F.linear(hh, ww, bb), t, reduction=reduction)
        upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
        out.backward(upstream)
        for rank, res in enumerate(per_rank):
            value, gh, gw, gb = res[(reduction, chunk)]
            lo = sum(SPLIT[:rank])
            sl = slice(lo, lo + SPLIT[rank])
            msg = f"rank {rank}, {reduction}, chunk_size={chunk}"
            torch.testing.assert_close(value, out.detach(), **TOL, msg=msg)
            torch.testing.assert_close(gh, hh.grad, **TOL, msg=msg)
            torch.testing.assert_close(gw, ww.grad[sl], **TOL, msg=msg)
            torch.testing.assert_close(gb, bb.grad[sl], **TOL, msg=msg)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiles_without_graph_breaks(reduction):
    """torch.compile(fullgraph=True) traces the chunk loop and each chunk's gradient (autograd.grad inside the
    autograd.Function: Dynamo's ``trace_autograd_ops``); without that option it breaks the graph there and the
    results are the same."""
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        pytest.skip("this torch's Dynamo cannot trace torch.autograd.grad")
    g = torch.Generator().manual_seed(16)
    t, kw = _targets("smoothing", g)
    mod = ts.HXELoss(TAX, 0.5, reduction=reduction, **kw)
    h, w, b = _params(g)

    def fn(h, w, b, t):
        return ts.linear_loss(h, w, t, mod, bias=b, chunk_size=3)

    want, want_grads = _value_and_grads(lambda: fn(h, w, b, t), h, w, b, reduction, torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        got, got_grads = _value_and_grads(lambda: compiled(h, w, b, t), h, w, b, reduction,
                                          torch.Generator().manual_seed(1))
    assert mod.reduction == reduction
    torch.testing.assert_close(got, want, **TOL)
    for x, y in zip(got_grads, want_grads):
        torch.testing.assert_close(x, y, **TOL)
    torch._dynamo.reset()


def test_a_second_backward_is_refused_with_a_clear_error():
    """The gradients of "mean" / "sum" are made in the forward pass and handed out (scaled in place) once."""
    g = torch.Generator().manual_seed(17)
    t, _ = _targets("ids", g)
    h, w, b = _params(g)
    out = ts.linear_loss(h, w, t, ts.HXELoss(TAX, 0.5), bias=b, chunk_size=2)
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match=r"backward through the same loss twice \(retain_graph=True\)"):
        out.backward()
    # "none" computes its gradients in backward: twice is fine
    out = ts.linear_loss(h, w, t, ts.HXELoss(TAX, 0.5, reduction="none"), bias=b, chunk_size=2).sum()
    first = torch.autograd.grad(out, (h, w, b), retain_graph=True)
    for x, y in zip(torch.autograd.grad(out, (h, w, b)), first):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_the_automatic_chunk():
    from taxosmooth.losses.linear import CHUNK_BYTES, auto_chunk_size

    assert auto_chunk_size(10**6, 64) == 64  # the memory budget alone would give 16 thin rows
    assert auto_chunk_size(10**6, 8) == CHUNK_BYTES // (4 * 10**6) == 16
    assert auto_chunk_size(10**6, 4096) == 128
    assert auto_chunk_size(1000, 64) == CHUNK_BYTES // 4000
    assert auto_chunk_size(1000, 64, torch.float64) == CHUNK_BYTES // 8000
    assert auto_chunk_size(10**9, 1) == 1
