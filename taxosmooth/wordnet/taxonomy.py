"""WordNet synsets -> a class :class:`~taxosmooth.Taxonomy`.

The taxonomy is the hypernym closure of the classes (nltk's ``hypernyms()``
and ``instance_hypernyms()``, up to the roots), made a tree:

* WordNet is a DAG: a synset with several hypernyms keeps one, chosen by
  ``multiple_parents``: ``"longest"`` (default) keeps the parent on a longest
  path to the root, so that every class sits at its ``max_depth`` (nltk's
  ``Synset.max_depth``); ``"shortest"`` follows ``min_depth``; ``"first"``
  keeps the first hypernym; ``"error"`` refuses. Ties go to the first
  hypernym. Hypernyms are ordered ``hypernyms()`` then
  ``instance_hypernyms()``, each sorted by name (nltk's own order comes from a
  set and changes between Python processes). The class's path to the root is
  thus the first of ``Synset.hypernym_paths()`` (in that order) of the
  longest / shortest length, or the first path for ``"first"``.
* Verbs have several roots: they are joined under a virtual root
  (``root_name``, default ``"<root>"``), reported.
* ``contract_unary=True`` removes the single-child chains (``entity ->
  physical_entity -> object -> whole`` above one class ...).
* A class may not be a hypernym of another class: refused, naming both.

Every decision is in ``Taxonomy.report``: the data source, each lemma mapped
to its first noun sense, each synset that kept one of several hypernyms.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from taxosmooth.errors import TaxonomyError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from taxosmooth.taxonomy import Taxonomy
    from taxosmooth.wordnet.dag import HypernymDAG

NODE_NAMES = ("name", "wnid")


def wordnet_graph(dag: HypernymDAG, node_names: str = "name") -> nx.DiGraph:
    """The closure as a DiGraph ``hypernym -> hyponym``, parents inserted in the documented order."""
    if node_names not in NODE_NAMES:
        raise ValueError(f"node_names must be one of {NODE_NAMES}, got {node_names!r}")
    if node_names == "name":
        labels = list(dag.names)
    else:
        labels = [f"{s.pos()}{s.offset():08d}" for s in dag.synsets]
    graph = nx.DiGraph()
    graph.add_nodes_from(labels)
    for v in range(dag.num_nodes):
        for p in dag.parents(v):
            graph.add_edge(labels[p], labels[v])
    return graph


def _check_nested(dag, labels) -> None:
    from taxosmooth.wordnet.similarity import _Pairs

    above = _Pairs(dag).is_ancestor()
    np.fill_diagonal(above, False)
    i, j = np.nonzero(above)
    if len(i):
        more = f" ({len(i) - 1} more such pair(s))" if len(i) > 1 else ""
        raise TaxonomyError(
            f"class {labels[i[0]]!r} is a hypernym of class {labels[j[0]]!r}{more}; classes must not contain "
            "one another: drop one of them, or replace the broader one by a more specific synset"
        )


def taxonomy_from_wordnet(
    synsets: Iterable,
    *,
    multiple_parents: str = "longest",
    contract_unary: bool = False,
    multiple_roots: str = "join",
    root_name: str = "<root>",
    node_names: str = "name",
    wordnet: WordNetCorpusReader | None = None,
) -> Taxonomy:
    """A class taxonomy from WordNet synsets: their hypernym closure, made a tree.

    Parameters
    ----------
    synsets : iterable
        The classes, in logit order: synset names (``"horse.n.01"``), ImageNet
        ids (``"n02374451"``), ``(pos, offset)`` pairs, nltk ``Synset``
        objects or plain lemmas (first noun sense, reported). No duplicates.
    multiple_parents : {"longest", "shortest", "first", "error"}, default "longest"
        Which hypernym a synset with several keeps (module docstring).
    contract_unary : bool, default False
        Remove non-class nodes with a single child.
    multiple_roots : {"join", "error"}, default "join"
        Several roots (verbs) are joined under ``root_name``, or refused.
    root_name : str, default "<root>"
    node_names : {"name", "wnid"}, default "name"
        Name the nodes ``"horse.n.01"`` or ``"n02374451"``.
    wordnet : WordNetCorpusReader, optional
        Defaults to :func:`taxosmooth.wordnet.load_wordnet`.

    Returns
    -------
    Taxonomy
        Classes in the order given; ``report`` lists every choice.

    Examples
    --------
    >>> tax = taxonomy_from_wordnet(["horse.n.01", "zebra.n.01", "whale.n.02"])
    >>> tax.lca("horse.n.01", "zebra.n.01")
    'equine.n.01'
    """
    from taxosmooth.taxonomy import Taxonomy
    from taxosmooth.wordnet.dag import compile_dag
    from taxosmooth.wordnet.data import wordnet_source
    from taxosmooth.wordnet.synsets import resolve_synsets

    from taxosmooth.wordnet.synsets import _is_synset

    report: list[str] = []
    items = list(synsets) if not isinstance(synsets, (str, bytes)) else synsets
    if wordnet is None and not isinstance(items, (str, bytes)) and not all(_is_synset(s) for s in items):
        from taxosmooth.wordnet.data import load_wordnet

        wordnet = load_wordnet()
        report.append(wordnet_source().describe())
    resolved = resolve_synsets(items, wordnet=wordnet, report=report)
    dag = compile_dag(resolved)
    graph = wordnet_graph(dag, node_names)
    labels = list(graph.nodes)
    classes = [labels[v] for v in dag.inputs]
    _check_nested(dag, classes)
    multi = int(np.count_nonzero(np.diff(dag.parent_ptr) > 1))
    report.append(
        f"WordNet hypernym closure: {dag.num_nodes} synsets above and including the {len(classes)} classes, "
        f"{multi} with several hypernyms"
    )
    # the package-internal constructor: it also takes the report of the WordNet steps
    return Taxonomy._from_graph(
        graph,
        classes,
        multiple_parents=multiple_parents,
        multiple_roots=multiple_roots,
        root_name=root_name,
        contract_unary=contract_unary,
        report=report,
    )
