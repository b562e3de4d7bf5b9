"""Malformed taxonomy files that used to load as something else (issue 11): each gets an error naming the file.

Items: 1 (a stray quote), 5 (headers), 6 and 13 (node-link JSON), 8 (weights, overflowing sums),
16 (deep nesting), 19 (huge networkx weights), 22 (build errors cite file and line).
"""

from __future__ import annotations

import json
import math
import pickle
import sys

import networkx as nx
import numpy as np
import pytest
from _trees import SEED_NESTED, seed_taxonomy

import taxosmooth as ts
from taxosmooth.errors import CycleError, MultipleParentsError, MultipleRootsError, TaxonomyError, TaxonomyFileError

T = ts.Taxonomy


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- item 1: one line, one record
@pytest.mark.parametrize("ext, d", [("csv", ","), ("tsv", "\t")])
def test_a_stray_quote_does_not_swallow_the_rest_of_the_file(tmp_path, ext, d):
    rows = ["animal", "mammal"], ["mammal", 'hor"se'], ["mammal", "zebra"], ["animal", "whale"]
    # a quote inside an unquoted name is a character of that name, and every later line is still read
    tax = T.load(write(tmp_path, f"t.{ext}", "".join(d.join(r) + "\n" for r in rows)))
    assert tax.classes == ('hor"se', "zebra", "whale")
    # an opening quote that does not close on its line is an error naming that line
    text = f"animal{d}mammal\nmammal{d}\"horse\nmammal{d}zebra\nanimal{d}whale\n"
    with pytest.raises(TaxonomyFileError, match=rf"t2\.{ext}:2: the quoted field that starts at column 8 has no closing"):
        T.load(write(tmp_path, f"t2.{ext}", text))


def test_quoted_fields_follow_csv_on_one_line(tmp_path):
    text = 'parent,child\n"a, b",x\n "a, b" , "say ""hi"""\n"a, b",y\n'
    tax = T.load(write(tmp_path, "q.csv", text))
    assert tax.classes == ("x", 'say "hi"', "y") and tax.root == "a, b"
    with pytest.raises(TaxonomyFileError, match=r"q2\.csv:2: unexpected 'x' at column 4"):
        T.load(write(tmp_path, "q2.csv", 'r,a\n"a"x,b\n'))


def test_line_breaks_other_than_newlines_stay_inside_names(tmp_path):
    # \n, \r\n and \r end a line; a form feed or U+2028 is part of a name (as the csv module reads it)
    tax = T.load(write(tmp_path, "t.csv", "r,a\fb\r\nr,c\u2028d\rr,e\n"))
    assert tax.classes == ("a\fb", "c\u2028d", "e")


# ---------------------------------------------------------------------------- item 5: headers
@pytest.mark.parametrize(
    "first",
    ["source,target", "from,to", "child,parent", "Parent,Node", "src,dst", "node,parent", "parent,child,cost", "a,b,heavy"],
)
def test_a_header_other_than_parent_child_is_an_error(tmp_path, first):
    path = write(tmp_path, "h.csv", f"{first}\nanimal,horse\nanimal,zebra\n")
    with pytest.raises(TaxonomyFileError, match=rf"h\.csv:1: the first row '{first}' is not an edge"):
        T.load(path)


def test_header_words_as_node_names_need_the_header_or_quotes(tmp_path):
    with_header = T.load(write(tmp_path, "a.csv", "parent,child\nfrom,to\nfrom,x\n"))
    quoted = T.load(write(tmp_path, "b.csv", '"from","to"\nfrom,x\n'))
    assert with_header.classes == quoted.classes == ("to", "x") and with_header.root == "from"


@pytest.mark.parametrize("again", ["parent,child", "PARENT , CHILD", "parent,child,weight"])
def test_a_repeated_header_row_is_an_error(tmp_path, again):
    path = write(tmp_path, "r.csv", f"parent,child\nanimal,horse\n# the next file\n{again}\nanimal,zebra\n")
    with pytest.raises(TaxonomyFileError, match=r"r\.csv:4: a header row .* in the middle of the file \(the header is on line 1\)"):
        T.load(path)
    path = write(tmp_path, "s.csv", "animal,horse\nparent,child\n")
    with pytest.raises(TaxonomyFileError, match=r"s\.csv:2: a header row"):
        T.load(path)


def test_nodes_named_parent_and_child_round_trip(tmp_path):
    tax = T.from_edges([("r", "parent"), ("parent", "child"), ("r", "Weight")])
    for ext in ("csv", "tsv"):
        path = tmp_path / f"pc.{ext}"
        tax.save(path)
        assert T.load(path) == tax


# ---------------------------------------------------------------------------- item 8: weights as written
# each of these is a number to float(): "1_0" is 10, the others are Arabic-Indic and fullwidth digits
@pytest.mark.parametrize("weight", ["1_0", "1_000.5", "\u0661\u0660", "\uff11", "\u0663.5"])
def test_weights_are_plain_ascii_decimals(tmp_path, weight):
    path = write(tmp_path, "w.tsv", f"r\ta\t{weight}\nr\tb\t1\n")
    with pytest.raises(TaxonomyFileError, match=r"w\.tsv:1: .*weight .* is not a number"):
        T.load(path)


@pytest.mark.parametrize("weight, value", [("2", 2.0), ("+0.5", 0.5), (".5", 0.5), ("5.", 5.0), ("1E-3", 1e-3), ("1e+2", 100.0)])
def test_plain_weights_are_read(tmp_path, weight, value):
    tax = T.load(write(tmp_path, "w.csv", f"parent,child,weight\nr,a,{weight}\nr,b,1\n"))
    assert dict(((u, v), w) for u, v, w in tax.edges())[("r", "a")] == value


@pytest.mark.parametrize("weight", ["6e307", "8.9e307"])
def test_weight_sums_that_overflow_are_refused_naming_the_path(tmp_path, weight):
    path = write(tmp_path, "o.csv", f"parent,child,weight\nr,a,{weight}\na,x,{weight}\nr,y,1\n")
    with pytest.raises(TaxonomyError, match=r"from the root to 'x' add up to more than .*edge 'a' -> 'x'.*'r' -> 'a'"):
        T.load(path)
    with pytest.raises(TaxonomyError, match="'x'"):
        T.from_edges([("r", "a", float(weight)), ("a", "x", float(weight)), ("r", "y")])


def test_large_weights_that_fit_give_finite_soft_targets():
    big = float(np.finfo(np.float64).max) / 8
    tax = T.from_edges([("r", "a", big), ("a", "x", big), ("r", "y", big)])
    q = ts.soft_targets(tax, 2.0, distance="path_length", dtype=ts_float64())
    assert np.isfinite(q.numpy()).all()


def ts_float64():
    import torch

    return torch.float64


# ---------------------------------------------------------------------------- item 19: networkx weights
@pytest.mark.parametrize("exponent, sign", [(400, 1), (400, -1), (5000, 1)])
def test_a_networkx_weight_too_large_for_a_float_names_the_edge(exponent, sign):
    weight = sign * 10**exponent
    g = nx.DiGraph()
    g.add_edge("r", "a", weight=weight)
    g.add_edge("r", "b")
    with pytest.raises(TaxonomyError, match=r"edge 'r' -> 'a' has weight .*an integer of about \d+ digits"):
        T.from_networkx(g)


def test_a_json_weight_too_large_for_a_float_names_the_edge(tmp_path):
    text = '{"nodes": [{"id": "r"}, {"id": "a"}], "edges": [{"source": "r", "target": "a", "weight": 1' + "0" * 400 + "}]}"
    with pytest.raises(TaxonomyFileError, match=r"n\.json: edges\[0\]: weight .* of edge 'r' -> 'a' must be a finite number"):
        T.load(write(tmp_path, "n.json", text))


# ---------------------------------------------------------------------------- items 6 and 13: node-link JSON
def node_link(**parts):
    data = {"directed": True, "multigraph": False, "graph": {},
            "nodes": [{"id": n} for n in ("r", "a", "b")],
            "edges": [{"source": "r", "target": "a"}, {"source": "r", "target": "b"}]}
    data.update(parts)
    return {k: v for k, v in data.items() if v is not ...}


@pytest.mark.parametrize(
    "data, match",
    [
        (node_link(edges=...), r"needs an 'edges' list \(or 'links'"),
        (node_link(links=[{"source": "r", "target": "a"}]), "both 'edges' and 'links'"),
        (node_link(edges=[{"source": "r", "target": "a"}, {"source": "r", "target": "zz"}]),
         r"edges\[1\]: target 'zz' is not declared in 'nodes'"),
        (node_link(edges=[{"source": "q", "target": "a"}]), r"edges\[0\]: source 'q' is not declared"),
        (node_link(nodes=[{"id": "r"}, {"id": "a"}, {"id": "b"}, {"id": "a"}]),
         r"nodes\[3\]: node 'a' is declared twice \(also nodes\[1\]\)"),
        (node_link(directed="false"), r"'directed' must be true or false, got a str 'false'"),
        (node_link(directed=0), r"'directed' must be true or false, got a number 0"),
        (node_link(multigraph="no"), r"'multigraph' must be true or false"),
        (node_link(multigraph=True), "multigraph"),
        (node_link(graph=[1]), r"'graph' must be an object \(graph attributes\), got a list \[1\]"),
        (node_link(graph="x"), r"'graph' must be an object"),
        (node_link(graph={"classes": [True]}), r"graph\.classes\[0\] is a boolean"),
        (node_link(nodes=[{"id": True}]), r"nodes\[0\] is a boolean True, not a node name"),
        (node_link(nodes=[{"id": 1.5}]), r"nodes\[0\] is a number 1\.5, not a node name"),
        (node_link(extra=1), r"unknown key\(s\) 'extra'"),
        ({"nodes": {"mammal": ["horse"]}, "sea": ["whale"]}, r"unknown key\(s\) 'sea'"),
    ],
)
def test_node_link_data_is_read_strictly(tmp_path, data, match):
    path = write(tmp_path, "n.json", json.dumps(data))
    with pytest.raises(TaxonomyFileError, match=r"n\.json: (node-link data .*)?" + match):
        T.load(path)


def test_graph_list_is_a_file_error_not_an_attribute_error(tmp_path):
    # item 13 exactly as reported
    path = write(tmp_path, "g.json", '{"graph": [1], "nodes": [{"id": "a"}], "edges": []}')
    with pytest.raises(TaxonomyFileError, match=r"g\.json: 'graph' must be an object"):
        T.load(path)


def test_integer_node_ids_still_load(tmp_path):
    g = nx.DiGraph([(0, 1), (0, 2)])
    path = write(tmp_path, "i.json", json.dumps(nx.node_link_data(g, edges="edges")))
    assert T.load(path).classes == (1, 2)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"animal": [1, "horse"]}, r'\["animal"\]\[0\]: a number 1 cannot be a node name; .*strings \(write it in quotes'),
        ({"animal": ["horse", True]}, r'\["animal"\]\[1\]: a boolean True cannot be a node name'),
        ({"animal": {"mammal": 2.5}}, r'\["animal"\]\["mammal"\] must be an object, a list, a name or null, got a number 2\.5'),
        ({"animal": {"mammal": False}}, r'\["animal"\]\["mammal"\] must be .* got a boolean'),
        ([{"a": ["x"]}, 3], r"\[1\]: a number 3 cannot be a node name"),
        ({"animal": [None]}, r'\["animal"\]\[0\]: null cannot be a node name'),
        ({"a": {"b": [["c"]]}}, r'\["a"\]\["b"\]\[0\] is a list inside a list'),
    ],
)
def test_nested_json_names_are_strings(tmp_path, data, match):
    path = write(tmp_path, "n.json", json.dumps(data))
    with pytest.raises(TaxonomyFileError, match=r"n\.json: " + match):
        T.load(path)


def test_nested_json_duplicate_keys_and_constants_are_errors(tmp_path):
    with pytest.raises(TaxonomyFileError, match=r"d\.json:3: invalid JSON \(the key 'mammal' appears twice"):
        T.load(write(tmp_path, "d.json", '{"animal": {\n  "mammal": ["horse"],\n  "mammal": ["zebra"]}}'))
    with pytest.raises(TaxonomyFileError, match=r"c\.json:2: invalid JSON \(NaN is not a JSON number"):
        T.load(write(tmp_path, "c.json", '{"nodes": [{"id": "a"}, {"id": "b"}],\n "edges": [{"source": "a", "target": "b", "weight": NaN}]}'))
    with pytest.raises(TaxonomyFileError, match=r"l\.json:1: invalid JSON \(an integer of 5000 digits is too long"):
        T.load(write(tmp_path, "l.json", '{"a": [' + "1" * 5000 + "]}"))


def test_python_nested_data_keeps_integer_names_but_not_bools():
    assert T.from_nested({0: [1, 2]}).classes == (1, 2)
    with pytest.raises(TaxonomyError, match=r"\[0\]: True cannot be a node name"):
        T.from_nested({"a": [True, "b"]})


# ---------------------------------------------------------------------------- item 16: depth
def chain_nested(depth: int):
    top = node = {}
    for i in range(depth):
        child: dict = {}
        node[f"n{i}"] = child
        node = child
    node["leaf"] = None
    return top


def test_from_nested_5000_levels():
    tax = T.from_nested(chain_nested(5000))
    assert tax.max_depth == 5000 and tax.classes == ("leaf",)


@pytest.mark.parametrize("depth", [1000, 5000])
def test_json_files_1000_and_5000_deep(tmp_path, depth):
    text = "".join(f'{{"n{i}": ' for i in range(depth)) + '["leaf", "other"]' + "}" * depth
    tax = T.load(write(tmp_path, "deep.json", text))
    assert tax.max_depth == depth and tax.classes == ("leaf", "other")
    # a mistake deep inside still names its line and column
    with pytest.raises(TaxonomyFileError, match=r"bad\.json:1: invalid JSON \(Expecting ',' delimiter"):
        T.load(write(tmp_path, "bad.json", text[:-3] + "]" + "}" * 2))


@pytest.mark.parametrize("n", [20_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_a_deep_chain_describes_saves_loads_and_pickles(tmp_path, n):
    # far deeper than the recursion limit: every path (build, describe, pickle, save, load) is iterative
    edges = [(f"n{i}", f"n{i + 1}") for i in range(n)] + [("n0", "side")]
    tax = T.from_edges(edges)
    assert tax.max_depth == n
    assert "Taxonomy with 2 classes" in tax.describe()
    assert pickle.loads(pickle.dumps(tax)) == tax
    for ext in ("csv", "json", "txt"):
        path = tmp_path / f"chain.{ext}"
        tax.save(path)
        assert T.load(path) == tax, ext
    nested = chain_nested(n)
    assert T.from_nested(nested).max_depth == n
    assert sys.getrecursionlimit() < n  # none of the above recursed


def test_iterative_json_parser_matches_json_loads():
    from taxosmooth.taxonomy._json import parse_iterative

    docs = ['{"a": [1, 2.5, -0, 1e3, "x\\u00e9\\n", true, false, null, {}, []]}', "[]", '""', "  3 ", '{"a": {"b": {"c": [[], [{}]]}}}',
            '"\\ud834\\udd1e"', "[1E-2, -0.0, 12345678901234567890]"]
    for doc in docs:
        assert parse_iterative(doc) == json.loads(doc), doc
    for bad, what in [("[1,]", "Expecting value"), ('{"a" 1}', "Expecting ':'"), ("[1 2]", "Expecting ','"),
                      ("{'a': 1}", "property name"), ('"abc', "Unterminated string"), ("[1] x", "Extra data"),
                      ("[Infinity]", "Infinity is not a JSON number"), ('{"a": 1, "a": 2}', "appears twice"), ("", "Expecting value")]:
        with pytest.raises(TaxonomyFileError, match=what):
            parse_iterative(bad, "x.json")


# ---------------------------------------------------------------------------- item 22: build errors cite the file
@pytest.mark.parametrize(
    "name, text, error, match",
    [
        ("c.csv", "r,a\na,b\n# note\nb,c\nc,a\nc,x\n", CycleError,
         r"cycle: .* \(edges at .*c\.csv:\d, .*c\.csv:\d, .*c\.csv:\d\)"),
        ("c.csv", "r,a\nr,x\na,a\n", CycleError, r"c\.csv:3: self-loop on node 'a'"),
        ("m.csv", "r,a\nr,b\na,x\n\nb,x\nr,y\n", MultipleParentsError,
         r"m\.csv:5: node 'x' has 2 parents \('a' \(.*m\.csv:3\), 'b' \(.*m\.csv:5\)\)"),
        ("m.txt", "r/a/x\nr/b/y\n# more\nr/b/x\n", MultipleParentsError,
         r"m\.txt:4: node 'x' has 2 parents \('a' \(.*m\.txt:1\), 'b' \(.*m\.txt:4\)\)"),
        ("m.json", json.dumps({"r": {"a": ["x"], "b": ["x", "y"]}}), MultipleParentsError,
         r'node \'x\' has 2 parents \(\'a\' \(.*m\.json: \["r"\]\["a"\]\[0\]\), \'b\' \(.*m\.json: \["r"\]\["b"\]\[0\]\)\)'),
        ("n.json", json.dumps(node_link(nodes=[{"id": n} for n in "rabx"],
                                        edges=[{"source": "r", "target": "a"}, {"source": "r", "target": "b"},
                                               {"source": "a", "target": "x"}, {"source": "b", "target": "x"}])),
         MultipleParentsError, r"n\.json: edges\[3\]: node 'x' has 2 parents \('a' \(.*edges\[2\]\), 'b' \(.*edges\[3\]\)\)"),
        ("root.csv", "a,x\na,z\n<root>,y\n", TaxonomyError, r"root\.csv:3: root_name '<root>' is already a node"),
    ],
)
def test_build_errors_name_the_file_and_lines(tmp_path, name, text, error, match):
    with pytest.raises(error, match=match):
        T.load(write(tmp_path, name, text))


def test_multiple_roots_error_names_the_lines(tmp_path):
    # (the first row touches another row: a detached first row would be refused as a header row in disguise)
    with pytest.raises(MultipleRootsError, match=r"2 roots \('a' \(.*f\.csv:1\), 'b' \(.*f\.csv:3\)\)"):
        T.load(write(tmp_path, "f.csv", "a,x\na,z\nb,y\n"), multiple_roots="error")


def test_locations_are_not_part_of_the_taxonomy(tmp_path):
    # the side table stays out of the graph, the equality and the pickle
    tax = T.load(write(tmp_path, "s.csv", "animal,mammal\nanimal,sea\nmammal,horse\nmammal,zebra\nsea,whale\nsea,shark\n"))
    assert tax == seed_taxonomy() and pickle.loads(pickle.dumps(tax)) == tax
    assert all(set(d) == {"weight"} for _, _, d in tax.to_networkx().edges(data=True))
    assert T.from_nested(SEED_NESTED) == tax
    assert math.isclose(ts.class_distances(tax)[0, 1], 1.0)
