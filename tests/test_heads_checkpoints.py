"""A head's checkpoint is tied to its taxonomy: another class order or another tree is refused, by name.

The parameters of a head trained on the same tree with its classes in another order, or on another
tree of the same size, have the shapes of this head's: without the fingerprint they would load and
predict other classes without a word.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import taxosmooth as ts
from taxosmooth.embeddings import class_embeddings, haframe_weights
from taxosmooth.heads import EmbeddingHead, FixedClassifier, HierarchicalSoftmax, LevelwiseHead

NESTED = {"life": {"mammal": {"horse": None, "zebra": None, "donkey": None}, "sea": ["whale", "shark", "squid"],
                   "bird": ["owl", "crow"]}}
CLASSES = ["horse", "zebra", "donkey", "whale", "shark", "squid", "owl", "crow"]
FEATURES = 6


def taxonomy() -> ts.Taxonomy:
    return ts.Taxonomy.from_nested(NESTED, classes=CLASSES)


def permuted() -> ts.Taxonomy:
    """The same tree, two classes swapped in the class order (the logit columns)."""
    order = CLASSES.copy()
    order[0], order[4] = order[4], order[0]
    return ts.Taxonomy.from_nested(NESTED, classes=order)


def other_tree() -> ts.Taxonomy:
    """The same classes in the same order, with the same sizes at every depth, under other parents."""
    nested = {"life": {"mammal": ["horse", "whale", "donkey"], "sea": ["zebra", "shark", "squid"],
                       "bird": ["owl", "crow"]}}
    return ts.Taxonomy.from_nested(nested, classes=CLASSES)


def make(name: str, tax: ts.Taxonomy, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "HierarchicalSoftmax":
        return HierarchicalSoftmax(FEATURES, tax)
    if name == "LevelwiseHead":
        return LevelwiseHead(FEATURES, tax)
    if name == "EmbeddingHead":
        return EmbeddingHead(FEATURES, tax, ce_weight=0.1).eval()
    if name == "EmbeddingHead(vectors, taxonomy=)":
        return EmbeddingHead(FEATURES, class_embeddings(tax, dtype=torch.float32), taxonomy=tax)
    return FixedClassifier(FEATURES, haframe_weights(tax), taxonomy=tax)


HEADS = ["HierarchicalSoftmax", "LevelwiseHead", "EmbeddingHead", "EmbeddingHead(vectors, taxonomy=)",
         "FixedClassifier"]


def state(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("name", HEADS)
def test_the_same_taxonomy_round_trips(name):
    saved = make(name, taxonomy(), seed=0)
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # the fingerprint is plain data
    head = make(name, taxonomy(), seed=1)  # an equal taxonomy built again, other initial weights
    x = torch.randn(5, FEATURES)
    assert not torch.allclose(head(x), saved(x))
    head.load_state_dict(checkpoint)
    torch.testing.assert_close(head(x), saved(x))


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("other,what", [(permuted, "the same tree with its classes in another order"),
                                        (other_tree, "the same classes in another tree")])
def test_a_checkpoint_of_another_taxonomy_is_refused(name, other, what):
    saved, tax = make(name, taxonomy()), other()
    head = make(name, tax, seed=1)
    assert tax.fingerprint != taxonomy().fingerprint
    assert {k: v.shape for k, v in state(head).items()} == {k: v.shape for k, v in state(saved).items()}
    before = state(head)
    with pytest.raises(RuntimeError) as info:
        head.load_state_dict(saved.state_dict())
    message = str(info.value)
    assert taxonomy().fingerprint in message and tax.fingerprint in message, message  # both fingerprints
    assert what in message and message.startswith(type(head).__name__), message
    after = state(head)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing of the head was loaded


@pytest.mark.parametrize("name", HEADS)
def test_a_checkpoint_without_a_fingerprint_is_refused_with_the_way_out(name):
    saved = make(name, taxonomy())
    old = {k: v for k, v in saved.state_dict().items() if k != "_extra_state"}  # as saved before the fingerprint
    head = make(name, taxonomy(), seed=1)
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"no taxonomy fingerprint .*fingerprint '[0-9a-f]{32}'.*"
                                               r"state_dict\['_extra_state'\] = head.get_extra_state\(\)"):
            head.load_state_dict(old, strict=strict)
    old["_extra_state"] = head.get_extra_state()  # the way out the message gives
    head.load_state_dict(old)
    x = torch.randn(3, FEATURES)
    torch.testing.assert_close(head(x), saved(x))


def test_the_fingerprint_is_checked_inside_a_model_and_names_the_key():
    model = nn.Sequential(nn.Linear(4, FEATURES), HierarchicalSoftmax(FEATURES, taxonomy()))
    other = nn.Sequential(nn.Linear(4, FEATURES), HierarchicalSoftmax(FEATURES, permuted()))
    with pytest.raises(RuntimeError, match="HierarchicalSoftmax: .*another taxonomy"):
        other.load_state_dict(model.state_dict())
    old = {k: v for k, v in model.state_dict().items() if k != "1._extra_state"}
    with pytest.raises(RuntimeError, match=r"state_dict\['1._extra_state'\]"):
        other.load_state_dict(old)
    # a checkpoint with none of the head's entries (the backbone's weights) loads with strict=False
    head_before = state(other[1])
    result = other.load_state_dict({"0.weight": torch.zeros(FEATURES, 4), "0.bias": torch.zeros(FEATURES)},
                                   strict=False)
    assert set(result.missing_keys) == {"1._extra_state", "1.linear.weight", "1.linear.bias"}
    assert torch.equal(other[0].weight, torch.zeros(FEATURES, 4))
    assert all(torch.equal(head_before[k], v) for k, v in state(other[1]).items())


def test_the_checkpoint_says_what_differs():
    head = HierarchicalSoftmax(FEATURES, taxonomy())
    smaller = ts.Taxonomy.from_nested({"life": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    renamed = ts.Taxonomy.from_nested({"life": {"mammal": ["h", "zebra", "donkey"], "sea": ["whale", "shark", "squid"],
                                                "bird": ["owl", "crow"]}},
                                      classes=["h"] + CLASSES[1:])
    weighted = ts.Taxonomy.from_edges([(p, c, 2.0 if c == "owl" else 1.0) for p, c, _ in taxonomy().edges()],
                                      classes=CLASSES)
    cases = [(smaller, "it has 4 classes, this head 8"), (renamed, "its classes have other names"),
             (weighted, "the same classes in another tree")]
    for tax, what in cases:
        with pytest.raises(RuntimeError, match=what):
            head.load_state_dict(make_state(tax))
    # a checkpoint holding the fingerprint alone (as a loss stores it) still names both
    fp_only = {**head.state_dict(), "_extra_state": {"taxonomy": permuted().fingerprint}}
    with pytest.raises(RuntimeError, match="classes, nodes, parents or edge weights differ"):
        head.load_state_dict(fp_only)


def make_state(tax: ts.Taxonomy) -> dict:
    """A checkpoint of a head on ``tax`` carrying this file's head's weights (only the extra state differs)."""
    head = HierarchicalSoftmax(FEATURES, taxonomy())
    return {**head.state_dict(), "_extra_state": HierarchicalSoftmax(FEATURES, tax).get_extra_state()}


def test_a_head_without_a_taxonomy_checks_nothing():
    frame = haframe_weights(taxonomy())
    bare = FixedClassifier(FEATURES, frame)
    assert bare.taxonomy is None and bare.state_dict()["_extra_state"] == {}
    bare.load_state_dict(FixedClassifier(FEATURES, frame, taxonomy=taxonomy()).state_dict())
    with pytest.raises(RuntimeError, match="no taxonomy fingerprint"):  # but a bound head refuses its checkpoint
        FixedClassifier(FEATURES, frame, taxonomy=taxonomy()).load_state_dict(bare.state_dict())


def test_the_taxonomy_of_class_vectors_must_match_them():
    phi = class_embeddings(taxonomy(), dtype=torch.float32)
    small = ts.Taxonomy.from_nested({"r": ["a", "b"]})
    with pytest.raises(ValueError, match="the taxonomy has 2 classes but there are 8 class vectors"):
        EmbeddingHead(FEATURES, phi, taxonomy=small)
    with pytest.raises(ValueError, match="the taxonomy has 2 classes but there are 8 class vectors"):
        FixedClassifier(FEATURES, haframe_weights(taxonomy()), taxonomy=small)
    with pytest.raises(TypeError, match="taxonomy must be a taxosmooth.Taxonomy or None, got list"):
        FixedClassifier(FEATURES, haframe_weights(taxonomy()), taxonomy=CLASSES)
    with pytest.raises(ValueError, match="embeddings is a taxonomy and taxonomy= is another one"):
        EmbeddingHead(FEATURES, taxonomy(), taxonomy=permuted())
    assert EmbeddingHead(FEATURES, taxonomy(), taxonomy=taxonomy()).taxonomy == taxonomy()
