"""WordNet synsets to class taxonomies and similarity matrices, offline and exact.

* :func:`load_wordnet` -- nltk's WordNet reader on the first data found:
  nltk's own data, the folder named by ``TAXOSMOOTH_WORDNET_DIR``, or the
  system WordNet (``/usr/share/wordnet``); nothing is downloaded
  (:mod:`taxosmooth.wordnet.data`).
* :func:`resolve_synsets` -- names, ImageNet ids, ``(pos, offset)``, ``Synset``
  objects, lemmas (:mod:`taxosmooth.wordnet.synsets`).
* :func:`taxonomy_from_wordnet` -- the hypernym closure made a tree, every
  choice reported (:mod:`taxosmooth.wordnet.taxonomy`).
* :func:`similarity_matrix`, :func:`distance_matrix` -- ``path``, ``wup``,
  ``lch``, ``res``, ``jcn``, ``lin`` for all pairs, equal to nltk's
  (:mod:`taxosmooth.wordnet.similarity`); IC tables in
  :mod:`taxosmooth.wordnet.ic`.
"""

from taxosmooth.wordnet.data import ENV_VAR, find_wordnet_data, load_wordnet, wordnet_source
from taxosmooth.wordnet.ic import intrinsic_ic, load_ic
from taxosmooth.wordnet.similarity import MEASURES, compile_synsets, distance_matrix, similarity_matrix
from taxosmooth.wordnet.synsets import resolve_synset, resolve_synsets, wnid
from taxosmooth.wordnet.taxonomy import taxonomy_from_wordnet

__all__ = [
    "ENV_VAR",
    "MEASURES",
    "load_wordnet",
    "wordnet_source",
    "find_wordnet_data",
    "resolve_synset",
    "resolve_synsets",
    "wnid",
    "taxonomy_from_wordnet",
    "similarity_matrix",
    "distance_matrix",
    "compile_synsets",
    "intrinsic_ic",
    "load_ic",
]
