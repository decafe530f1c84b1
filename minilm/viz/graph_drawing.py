"""The computational graph behind a tensor, as Graphviz DOT text or a rendered image.

    g = viz.graph(loss, show_grad=True, params=dict(model.named_parameters()))
    loss.backward()
    print(g.dot)                 # Graphviz DOT text, always available
    g.save("graph.svg")          # rendered by Graphviz's `dot` program when installed
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..autograd import GraphError, Tensor
from ..data import atomic_write_bytes, atomic_write_text


@dataclass
class GraphNode:
    """An op (a `Function` that ran), a leaf tensor (input or parameter), or the output."""

    id: str
    kind: str  # "op" | "leaf" | "output"
    label: str  # the op's class name, or the tensor's name
    shape: tuple  # of the op's (first) output, or of the tensor
    dtype: str
    requires_grad: bool
    tensor: Tensor | None = field(default=None, repr=False)  # leaves only: read .grad when drawn

    @property
    def grad_norm(self) -> float | None:
        """The L2 norm of a leaf's `.grad` now (None before backward, and for ops)."""
        if self.tensor is None or self.tensor.grad is None:
            return None
        return float(np.linalg.norm(self.tensor.grad.numpy()))


@dataclass
class GraphEdge:
    """A tensor flowing from `source` into `target`; `grad_norm` is filled in by backward."""

    source: str
    target: str
    shape: tuple
    dtype: str
    grad_norm: float | None = None
    output_index: int | None = None  # which output of a multi-output op (q, k, v of SplitHeads ...)


class Graph:
    """The graph behind a tensor, captured when `graph()` is called.

    Capturing up front matters: an ordinary `backward()` releases each op's saved inputs
    as it goes, so the structure must be read before. With show_grad=True the graph hooks
    every intermediate tensor, and the gradient norms that backward sends along the edges
    (and the leaves' `.grad`) appear when the graph is drawn afterwards.
    """

    def __init__(self, nodes: list[GraphNode], edges: list[GraphEdge], show_grad: bool):
        self.nodes, self.edges, self.show_grad = nodes, edges, show_grad

    @property
    def ops(self) -> list[str]:
        """The op names in the order they ran (inputs before the ops that use them)."""
        return [n.label for n in self.nodes if n.kind == "op"]

    @property
    def dot(self) -> str:
        """Graphviz DOT text: ops as ellipses, leaves as boxes (blue: requires grad)."""
        lines = ["digraph minilm {", '  rankdir=TB;',
                 '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=9];']
        for node in self.nodes:
            lines.append(f"  {node.id} [{_node_style(node, self.show_grad)}];")
        for edge in self.edges:
            label = _shape_text(edge.shape)
            if edge.output_index is not None:
                label = f"output {edge.output_index}: {label}"
            if self.show_grad and edge.grad_norm is not None:
                label += f"\\n‖grad‖ {edge.grad_norm:.3g}"
            lines.append(f'  {edge.source} -> {edge.target} [label="{label}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def save(self, path) -> Path:
        """Write `.dot` text, or render .svg/.png/.pdf with Graphviz; returns the path written.

        Without the `dot` program the DOT text is written next to `path` (suffix .dot) and
        a warning says how to install Graphviz.
        """
        path = Path(path)
        if path.suffix not in (".dot", ".svg", ".png", ".pdf"):
            raise ValueError(f"save a graph as .dot, .svg, .png or .pdf, not {path.name!r}")
        if path.suffix == ".dot":
            atomic_write_text(path, self.dot)
            return path
        if shutil.which("dot") is None:
            fallback = path.with_suffix(".dot")
            atomic_write_text(fallback, self.dot)
            warnings.warn(f"Graphviz's `dot` program is not installed, so {path.name} could not be rendered; "
                          f"wrote the DOT text to {fallback} instead (install Graphviz, e.g. "
                          "`apt-get install graphviz` or `brew install graphviz`, then run "
                          f"`dot -T{path.suffix[1:] or 'svg'} {fallback} -o {path}`)", stacklevel=2)
            return fallback
        rendered = subprocess.run(["dot", f"-T{path.suffix[1:]}"], input=self.dot.encode("utf-8"),
                                  capture_output=True, timeout=120)
        if rendered.returncode != 0:
            raise RuntimeError(f"dot failed to render {path}: {rendered.stderr.decode(errors='replace').strip()}")
        atomic_write_bytes(path, rendered.stdout)
        return path


def graph(tensor: Tensor, show_grad: bool = False, params: dict | None = None) -> Graph:
    """Capture the computational graph that produced `tensor` (call it before backward).

    params: {name: tensor} to name the leaves, e.g. dict(model.named_parameters()).
    show_grad: record the gradient norms of the coming backward pass (see `Graph`).
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"viz.graph expects a Tensor, got {type(tensor).__name__}")
    names = {id(t): name for name, t in (params or {}).items()}
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    node_of: dict[int, str] = {}  # id(Function) or id(leaf Tensor) -> node id
    grad_norms: dict[int, list] = {}  # id(intermediate Tensor) -> the edges it flows along

    def leaf_node(t: Tensor) -> str:
        if id(t) not in node_of:
            node_of[id(t)] = f"leaf{len(node_of)}"
            label = names.get(id(t)) or t.name or "input"
            nodes.append(GraphNode(node_of[id(t)], "leaf", label, tuple(t.shape), str(t.dtype), t.requires_grad, t))
        return node_of[id(t)]

    for fn in _functions_in_forward_order(tensor):
        node_of[id(fn)] = f"op{len(node_of)}"
        shape, dtype = fn.output_specs[0]
        nodes.append(GraphNode(node_of[id(fn)], "op", type(fn).__name__, tuple(shape), str(dtype), True))
        for x in fn.inputs:
            source = leaf_node(x) if x.creator is None else node_of[id(x.creator)]
            edge = GraphEdge(source, node_of[id(fn)], tuple(x.shape), str(x.dtype), output_index=_output_index(x))
            edges.append(edge)
            if show_grad and x.creator is not None:
                grad_norms.setdefault(id(x), []).append(edge)
                if len(grad_norms[id(x)]) == 1:
                    x.register_hook(_norm_recorder(grad_norms[id(x)]))

    if tensor.creator is None:
        output = leaf_node(tensor)
    else:
        output = "output"
        label = names.get(id(tensor)) or tensor.name or "output"
        nodes.append(GraphNode(output, "output", label, tuple(tensor.shape), str(tensor.dtype), tensor.requires_grad))
        edge = GraphEdge(node_of[id(tensor.creator)], output, tuple(tensor.shape), str(tensor.dtype))
        edges.append(edge)
        if show_grad:
            tensor.register_hook(_norm_recorder([edge]))
    return Graph(nodes, edges, show_grad)


def _functions_in_forward_order(tensor: Tensor) -> list:
    """Every Function behind `tensor`, each after the functions that made its inputs.

    An iterative depth-first post-order (deep graphs must not hit the recursion limit).
    """
    if tensor.creator is None:
        return []
    order, done = [], set()
    stack = [(tensor.creator, False)]
    while stack:
        fn, inputs_done = stack.pop()
        if id(fn) in done:
            continue
        if inputs_done:
            done.add(id(fn))
            order.append(fn)
            continue
        if fn.inputs is None:
            raise GraphError("this graph was already freed by backward(); call viz.graph() before backward() "
                             "(or run backward(retain_graph=True))")
        stack.append((fn, True))
        for x in reversed(fn.inputs):
            if x.creator is not None and id(x.creator) not in done:
                stack.append((x.creator, False))
    return order


def _output_index(x: Tensor) -> int | None:
    """Which output of its creator `x` is, when the creator has several (else None)."""
    if x.creator is None or len(x.creator.outputs) == 1:
        return None
    return next(i for i, ref in enumerate(x.creator.outputs) if ref() is x)


def _norm_recorder(edges: list):
    def record(grad: Tensor) -> None:
        norm = float(np.linalg.norm(grad.numpy()))
        for edge in edges:
            edge.grad_norm = norm

    return record


def _node_style(node: GraphNode, show_grad: bool) -> str:
    details = f"{_shape_text(node.shape)} {node.dtype}"
    if node.kind == "op":
        return f'shape=ellipse, style=filled, fillcolor="#fff2cc", label="{_dot_escape(node.label)}\\n{details}"'
    lines = [_dot_escape(node.label), details]
    if node.kind == "leaf":
        lines.append("requires_grad" if node.requires_grad else "no grad")
        if show_grad and node.grad_norm is not None:
            lines.append(f"‖grad‖ {node.grad_norm:.3g}")
    color = "#d9ead3" if node.kind == "output" else ("#cfe2f3" if node.requires_grad else "#eeeeee")
    label = "\\n".join(lines)
    return f'shape=box, style="rounded,filled", fillcolor="{color}", label="{label}"'


def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
