"""A small writer of Graphviz's DOT language: a graph's nodes, edges and clusters as text, with no Graphviz needed.

Attribute values are quoted and escaped; an `Html` value (a Graphviz HTML-like label) is written as it is, between
angle brackets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

Attrs = dict[str, "str | int | float | bool | Html"]


class Html(str):
    """An HTML-like label: its text is Graphviz's markup, not a string to quote."""


@dataclass
class Dot:
    """A graph (or a cluster within one): nodes and edges in the order they were added, each edge once."""

    name: str
    attrs: Attrs = field(default_factory=dict)
    node_defaults: Attrs = field(default_factory=dict)
    nodes: list[tuple[str, Attrs]] = field(default_factory=list)
    edges: dict[tuple[str, str], Attrs] = field(default_factory=dict)
    clusters: list[Dot] = field(default_factory=list)

    def node(self, key: str, **attrs: str | int | float | bool | Html) -> None:
        self.nodes.append((key, attrs))

    def edge(self, source: str, target: str, **attrs: str | int | float | bool | Html) -> None:
        self.edges.setdefault((source, target), attrs)

    def cluster(self, name: str, **attrs: str | int | float | bool | Html) -> Dot:
        """A new cluster inside this graph: Graphviz draws a box around its nodes."""
        inner = Dot(f"cluster_{name}", attrs)
        self.clusters.append(inner)
        return inner

    def source(self) -> str:
        """The DOT text of the graph."""
        return "\n".join(["digraph " + _quote(self.name) + " {", *self._body("  "), "}", ""])

    def _body(self, indent: str) -> list[str]:
        lines = [f"{indent}{key}={_value(value)};" for key, value in self.attrs.items()]
        if self.node_defaults:
            lines.append(indent + _statement("node", self.node_defaults))
        for inner in self.clusters:
            lines += [f"{indent}subgraph {_quote(inner.name)} {{", *inner._body(indent + "  "), f"{indent}}}"]
        lines += [indent + _statement(_quote(key), attrs) for key, attrs in self.nodes]
        lines += [indent + _statement(f"{_quote(a)} -> {_quote(b)}", attrs) for (a, b), attrs in self.edges.items()]
        return lines


def html_text(text: object) -> str:
    """`text` made safe inside an HTML-like label."""
    return escape(str(text), quote=False)


def _statement(head: str, attrs: Attrs) -> str:
    return f"{head} {_attributes(attrs)};" if attrs else f"{head};"


def _attributes(attrs: Attrs) -> str:
    return "[" + ", ".join(f"{key}={_value(value)}" for key, value in attrs.items()) + "]"


def _value(value: str | int | float | bool | Html) -> str:
    if isinstance(value, Html):
        return f"<{value}>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _quote(str(value))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
