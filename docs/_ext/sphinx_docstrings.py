"""A griffe extension (mkdocs.yml, mkdocstrings' ``extensions``): the package's numpydoc docstrings, with
their Sphinx markup, as the API reference should show them.

The docstrings stay written for Sphinx and ``help()``; the renderer (mkdocstrings-python with griffe's
numpy parser) reads Markdown. Each docstring of the package is translated when it is parsed for the
page (the package loaded, its aliases resolved):

* a role, ``:func:`~taxosmooth.cost_matrix``` or ``:meth:`encode```, becomes a cross-reference that
  shows the name as code (``cost_matrix``, or the text as written without ``~``), its name resolved
  as Python would from the docstring's scope. It links where the API reference documents the object;
  otherwise (a private helper, a name outside the package such as ``torch...``) it is code alone;
* a ``.. math::`` directive becomes one ``$$`` block per equation, which pymdownx.arithmatex hands to
  KaTeX;
* the parameter tables take each parameter's default from the signature, and the type of an entry
  that gives none from that parameter's own annotation (griffe gives every name of an entry such as
  ``weight, ignore_index, reduction`` the first one's type and default, and a ``{"a", "b"}`` type its
  first choice as the default, dropping what follows the braces). A default that the docstring
  states and the signature does not have (``threshold : float, default 0.5`` for ``threshold=None``)
  stays in the type column.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from griffe import (
    AliasResolutionError,
    CyclicAliasError,
    Docstring,
    DocstringSectionKind,
    Extension,
    NameResolutionError,
    Object,
    ParameterKind,
    parse_docstring_annotation,
)

PACKAGE = "taxosmooth"

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|const|mod|exc|obj):`(?P<body>[^`]+)`")
MATH = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")
SECTION_RULE = re.compile(r"\s*-{3,}\s*")
ENTRY = re.compile(r"(?P<names>\*{0,2}\w+(?:,\s*\*{0,2}\w+)*)\s*(?::\s*(?P<type>.*\S))?\s*")
STATED_DEFAULT = re.compile(r"(?P<type>.+),\s+default(?: |: |=)(?P<default>.+)")
PARAMETER_SECTIONS = (DocstringSectionKind.parameters, DocstringSectionKind.other_parameters)


def resolve(scope: Object | None, name: str) -> str | None:
    """The canonical path of ``name`` seen from ``scope`` (an object of the package, its aliases resolved),
    or None for a name outside the package."""
    if name.split(".")[0] == PACKAGE:
        path = name
    elif scope is None:
        return None
    else:
        head, _, rest = name.partition(".")
        try:
            path = scope.resolve(head)
        except NameResolutionError:
            return None
        path = f"{path}.{rest}" if rest else path
        if path.split(".")[0] != PACKAGE:
            return None
    if scope is not None:  # the path under which the reference renders it (and registers the others)
        try:
            return scope.modules_collection[path].canonical_path
        except (KeyError, AliasResolutionError, CyclicAliasError):
            pass
    return path


def roles_to_references(text: str, scope: Object | None = None) -> str:
    """``:func:`~a.b``` -> a reference to ``a.b`` that shows ``b`` as code; a link where ``a.b`` is in the
    API reference, code alone elsewhere (a name outside the package, or one the reference leaves out)."""

    def reference(m: re.Match) -> str:
        body = m.group("body").strip()
        explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>", body)
        if explicit:
            title, target = explicit.group("title"), explicit.group("target")
        else:
            target = body.lstrip("!~")
            title = target.rsplit(".", 1)[-1] if body.lstrip("!").startswith("~") else target
        target = target.lstrip("!~")
        path = None if body.startswith("!") else resolve(scope, target)
        # autorefs' optional reference: unresolved, it is the code alone (no warning)
        return f'<autoref identifier="{path}" optional>`{title}`</autoref>' if path else f"`{title}`"

    return ROLE.sub(reference, text)


def indentation(line: str) -> int:
    return len(line.expandtabs()) - len(line.expandtabs().lstrip())


def math_to_blocks(text: str) -> str:
    """Each ``.. math::`` directive -> one ``$$`` block per equation (its paragraphs), at the directive's
    Markdown indentation (a multiple of 4: less is no nesting in Python-Markdown)."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = MATH.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        width = indentation(lines[i])
        body = [m.group("first")]
        i += 1
        while i < len(lines) and (not lines[i].strip() or indentation(lines[i]) > width):
            body.append(lines[i])
            i += 1
        equations = [e.strip() for e in re.split(r"\n\s*\n", "\n".join(body)) if e.strip()]
        pad = " " * (width - width % 4)
        if out and out[-1].strip():
            out.append("")
        for equation in equations:
            out += [pad + "$$", *(pad + line.strip() for line in equation.splitlines()), pad + "$$", ""]
        if i == len(lines):
            out.pop()
    return "\n".join(out)


def entry_types(text: str) -> dict[str, str | None]:
    """The type each parameter's numpydoc entry gives (None: no type), in Parameters and Other Parameters."""
    lines, types, inside = text.splitlines(), {}, False
    for line, under in zip(lines, [*lines[1:], ""]):
        if line.strip() and SECTION_RULE.fullmatch(under) and not SECTION_RULE.fullmatch(line):
            inside = line.strip() in ("Parameters", "Other Parameters")
        elif inside and line[:1].strip():
            m = ENTRY.fullmatch(line)
            if m:
                for name in m.group("names").split(","):
                    types[name.strip().lstrip("*")] = m.group("type")
    return types


def same_default(stated: str, default: Any) -> bool:
    """Whether a docstring's ``default ...`` says the signature's default (``float64`` for ``torch.float64``)."""
    stated, default = stated.strip(), str(default).strip()
    try:
        return ast.literal_eval(stated) == ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return stated == default or default.endswith("." + stated)


class SignatureDocstring(Docstring):
    """A docstring whose parameter tables agree with the signature (see the module's docstring)."""

    def parse(self, parser: Any = None, **options: Any) -> list:
        # at rendering, when the package's aliases are resolved
        markdown = Docstring(math_to_blocks(roles_to_references(self.value, self.parent)), lineno=self.lineno,
                             endlineno=self.endlineno, parent=self.parent, parser=self.parser,
                             parser_options=self.parser_options)
        sections = markdown.parse(parser, **options)
        types = entry_types(self.value)
        try:
            signature = self.parent.parameters  # a function's, or a class's __init__'s
        except AttributeError:
            return sections
        for section in sections:
            if section.kind not in PARAMETER_SECTIONS:
                continue
            for item in section.value:
                name = item.name.lstrip("*")
                if name not in types:
                    continue
                try:
                    parameter = signature[name]
                except KeyError:
                    parameter = None
                stated = types[name]
                if stated is None:
                    item.annotation = parameter.annotation if parameter is not None else None
                else:
                    m = STATED_DEFAULT.fullmatch(stated)
                    if m and (parameter is None or same_default(m.group("default"), parameter.default)):
                        stated = m.group("type")
                    stated = stated.removesuffix(", optional")
                    item.annotation = parse_docstring_annotation(stated, self)
                if parameter is not None and parameter.kind not in (ParameterKind.var_positional,
                                                                    ParameterKind.var_keyword):
                    item.value = parameter.default
        return sections


class SphinxDocstrings(Extension):
    """Translate the Sphinx markup of every docstring of the loaded package (see the module's docstring)."""

    def on_package(self, *, pkg: Object, **kwargs: Any) -> None:
        if pkg.name == PACKAGE:
            self._translate(pkg)

    def _translate(self, obj: Object) -> None:
        doc = obj.docstring
        if doc is not None:
            obj.docstring = SignatureDocstring(doc.value, lineno=doc.lineno, endlineno=doc.endlineno, parent=obj,
                                               parser=doc.parser, parser_options=doc.parser_options)
        for member in obj.members.values():
            if not member.is_alias:
                self._translate(member)
