"""Pictures of what happens inside: the autograd graph, attention maps, heatmaps.

    from minilm import viz
    g = viz.graph(loss, show_grad=True, params=dict(model.named_parameters()))
    loss.backward()
    print(g.dot)                 # Graphviz DOT text, always available
    g.save("graph.svg")          # rendered by Graphviz's `dot` program when installed

    weights, tokens = viz.attention_map(model, tokenizer, "The cat sat.", layer=0, head=3)
    viz.save_attention_heatmap(weights, tokens, "attention.svg")

Images: a path ending in .svg is written by this module itself (no dependency); any other
suffix (.png, .pdf) is drawn with matplotlib, and when matplotlib is not installed an .svg
is written next to it instead, with a warning. The arrays and the DOT text never need
anything beyond NumPy.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .autograd import GraphError, Tensor, no_grad
from .data import atomic_write_bytes, atomic_write_text


# ---------------------------------------------------------------------------------------
# The computational graph
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# Attention maps
# ---------------------------------------------------------------------------------------
def encode_text(tokenizer, text: str) -> tuple[np.ndarray, list[str]]:
    """Token ids [T] and the readable token strings of `text`.

    WordPiece adds [CLS] ... [SEP] as BERT expects; byte-level BPE tokens are shown as
    UTF-8 text (a token holding part of a character shows the replacement mark).
    """
    ids = list(tokenizer.encode(text))
    if not ids:
        raise ValueError(f"the text {text!r} encodes to no tokens")
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        tokens = list(tokenizer.convert_ids_to_tokens(ids))
    elif hasattr(tokenizer, "token_bytes"):
        tokens = [tokenizer.token_bytes(i).decode("utf-8", errors="replace") for i in ids]
    else:
        tokens = [tokenizer.decode([i]) for i in ids]
    return np.array(ids, dtype=np.int64), tokens


def attention_weights(model, ids) -> np.ndarray:
    """All attention weights of a GPT or BERT model for one sequence: [layers, heads, T, T].

    Row i of a map is how query position i spreads its attention over the key positions
    (it sums to 1). Runs the model in eval mode (no dropout) without recording a graph.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)  # [1, T]
    encoder = _attention_model(model)
    with no_grad(), eval_mode(model):
        result = encoder(ids, output_attentions=True)  # GPT: a ModelOutput; BertModel: (hidden, attentions)
        attentions = result.attentions if hasattr(result, "attentions") else result[-1]  # layers x [1, H, T, T]
    return np.stack([a.numpy()[0] for a in attentions])


def attention_map(model, tokenizer, text: str, layer: int = 0, head: int | None = 0) -> tuple[np.ndarray, list[str]]:
    """The attention weights [T, T] of one layer and head (head=None: the mean over heads)
    for `text`, with its tokens (the labels of both axes: rows are queries, columns keys)."""
    ids, tokens = encode_text(tokenizer, text)
    weights = attention_weights(model, ids)  # [L, H, T, T]
    layers, heads = weights.shape[:2]
    if not -layers <= layer < layers:
        raise IndexError(f"layer {layer} is out of range: the model has {layers} layers")
    if head is None:
        return weights[layer].mean(axis=0), tokens
    if not -heads <= head < heads:
        raise IndexError(f"head {head} is out of range: the model has {heads} heads per layer")
    return weights[layer, head], tokens


def save_attention_heatmap(weights: np.ndarray, tokens: list[str], path, title: str = "attention") -> Path:
    """Draw an attention map [T, T] as a heatmap, queries down the side, keys along the top."""
    weights = np.asarray(weights)
    if weights.shape != (len(tokens), len(tokens)):
        raise ValueError(f"weights of shape {weights.shape} do not match {len(tokens)} tokens")
    return save_heatmap(weights, tokens, tokens, path, title=title, xlabel="key (attended to)",
                        ylabel="query (attending)", vmin=0.0)


def _attention_model(model):
    """The part of `model` that takes output_attentions: GPT, BertModel, or the BERT inside a head."""
    from .models import GPT, BertModel

    if isinstance(model, (GPT, BertModel)):
        return model
    inner = getattr(model, "bert", None)
    if isinstance(inner, BertModel):
        return inner
    raise TypeError(f"attention maps need a GPT or BERT model, got {type(model).__name__}")


class eval_mode:
    """`with eval_mode(model):` switches dropout off, then puts every module's mode back as it was."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc_info):
        for module, training in self.modes:
            object.__setattr__(module, "training", training)


# ---------------------------------------------------------------------------------------
# Heatmaps, coloured tokens
# ---------------------------------------------------------------------------------------
def display_token(token: str) -> str:
    """A token as a label: whitespace made visible (BPE tokens often start with a space)."""
    return token.replace(" ", "·").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def save_heatmap(matrix, row_labels, column_labels, path, title: str = "", xlabel: str = "", ylabel: str = "",
                 vmin: float | None = None, vmax: float | None = None, diverging: bool = False) -> Path:
    """A labelled heatmap of a 2-D array; returns the path written (see the module docstring)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape != (len(row_labels), len(column_labels)):
        raise ValueError(f"heatmap: expected a 2-D matrix of shape ({len(row_labels)}, {len(column_labels)}) "
                         f"to match the row and column labels, got shape {matrix.shape}")
    low, high = _color_range(matrix, vmin, vmax, diverging)
    path = Path(path)
    plt = _pyplot_for(path)
    if plt is None:
        return _svg_heatmap(matrix, row_labels, column_labels, path.with_suffix(".svg"), title, xlabel, ylabel,
                            low, high, diverging)
    size = max(4.0, 0.35 * max(matrix.shape) + 2.0)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(matrix, cmap="RdBu_r" if diverging else "Blues", vmin=low, vmax=high)
    axes.set_xticks(range(len(column_labels)), [display_token(t) for t in column_labels], rotation=90)
    axes.set_yticks(range(len(row_labels)), [display_token(t) for t in row_labels])
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("top")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, pad=12)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return _save_figure(plt, figure, path)


def save_line_plot(series: dict, path, title: str = "", xlabel: str = "", ylabel: str = "") -> Path:
    """Curves {name: (xs, ys)} on one pair of axes (e.g. validation loss of two models)."""
    series = {name: (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
              for name, (xs, ys) in series.items()}
    if not series or any(len(xs) != len(ys) or len(xs) == 0 for xs, ys in series.values()):
        raise ValueError("save_line_plot needs at least one series, each with as many x as y values (and some)")
    path = Path(path)
    plt = _pyplot_for(path)
    if plt is None:
        return _svg_line_plot(series, path.with_suffix(".svg"), title, xlabel, ylabel)
    figure, axes = plt.subplots(figsize=(7, 4))
    for name, (xs, ys) in series.items():
        axes.plot(xs, ys, "o-" if len(xs) < 30 else "-", label=name, markersize=3)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save_figure(plt, figure, path)


def ansi_colored(tokens, scores, scale: float | None = None) -> str:
    """The tokens joined into text, each on a background from blue (negative) to red
    (positive) by its score: a saliency map for the terminal (24-bit ANSI colours)."""
    scores = np.asarray(scores, dtype=np.float64)
    scale = _scale_of(scores, scale)
    parts = []
    for token, score in zip(tokens, scores):
        r, g, b = _diverging_rgb(score / scale)
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{token}\x1b[0m")
    return "".join(parts)


def save_colored_tokens(tokens, scores, path, title: str = "", scale: float | None = None,
                        line_width: int = 80) -> Path:
    """The tokens as text on coloured backgrounds (blue negative, red positive), as an image."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    scale = _scale_of(scores, scale)
    labels = [token.replace("\n", "⏎") for token in tokens]
    places = _layout_monospace(labels, line_width)  # (column, line) of each token, in characters
    lines = 1 + max((line for _, line in places), default=0)
    path = Path(path)
    plt = _pyplot_for(path)
    if plt is None:
        return _svg_colored_tokens(labels, scores / scale, places, lines, path.with_suffix(".svg"), title, line_width)
    figure = plt.figure(figsize=(0.11 * line_width + 0.5, 0.3 * lines + 0.8))
    axes = figure.add_axes([0, 0, 1, 1])
    axes.set_xlim(-0.5, line_width + 0.5)
    axes.set_ylim(lines + 1.2, -0.2)
    axes.axis("off")
    if title:
        axes.text(0, 0.3, title, fontsize=10, fontweight="bold", va="center")
    for label, score, (column, line) in zip(labels, scores / scale, places):
        color = tuple(c / 255 for c in _diverging_rgb(score))
        axes.add_patch(plt.Rectangle((column, line + 0.75), len(label), 0.9, color=color, linewidth=0))
        axes.text(column, line + 1.2, label, family="monospace", fontsize=10, va="center")
    return _save_figure(plt, figure, path)


def _layout_monospace(labels, line_width: int) -> list[tuple[int, int]]:
    places, column, line = [], 0, 0
    for label in labels:
        if column and column + len(label) > line_width:
            column, line = 0, line + 1
        places.append((column, line))
        column += len(label)
    return places


def _color_range(matrix, vmin, vmax, diverging):
    if diverging:
        bound = vmax if vmax is not None else float(np.max(np.abs(matrix))) or 1.0
        return -bound, bound
    low = float(matrix.min()) if vmin is None else vmin
    high = float(matrix.max()) if vmax is None else vmax
    return low, (high if high > low else low + 1.0)


def _scale_of(scores, scale):
    if scale is None:
        scale = float(np.max(np.abs(scores))) if scores.size else 1.0
    return scale or 1.0


def _sequential_rgb(fraction: float) -> tuple[int, int, int]:
    """White (0) to dark blue (1)."""
    f = min(max(fraction, 0.0), 1.0)
    return round(255 - 247 * f), round(255 - 207 * f), round(255 - 148 * f)


def _diverging_rgb(value: float) -> tuple[int, int, int]:
    """Blue (-1) through white (0) to red (+1)."""
    v = min(max(value, -1.0), 1.0)
    if v >= 0:
        return 255, round(255 - 200 * v), round(255 - 200 * v)
    return round(255 + 200 * v), round(255 + 130 * v), 255


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % rgb


def _pyplot_for(path: Path):
    """matplotlib's pyplot for a non-SVG image, or None: write SVG by hand."""
    if path.suffix.lower() == ".svg":
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(f"matplotlib is not installed: writing {path.with_suffix('.svg').name} instead of {path.name}",
                      stacklevel=3)
        return None
    return plt


def _save_figure(plt, figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        figure.savefig(temporary, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    temporary.replace(path)
    return path


def _svg_heatmap(matrix, row_labels, column_labels, path, title, xlabel, ylabel, low, high, diverging) -> Path:
    rows, columns = matrix.shape
    cell = max(10, min(28, 560 // max(rows, columns)))
    font = max(7, min(11, cell - 6))
    rows_text = [html.escape(display_token(t)) for t in row_labels]
    columns_text = [html.escape(display_token(t)) for t in column_labels]
    left = 30 + int(0.62 * font * max(map(len, rows_text)))
    top = 50 + int(0.62 * font * max(map(len, columns_text)))
    width, height = left + columns * cell + 20, top + rows * cell + 20
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="Helvetica">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
           f'<text x="{left}" y="34" font-size="10">{html.escape(xlabel)} →'
           f'   colour scale {low:.3g} … {high:.3g}</text>',
           f'<text x="12" y="{top + rows * cell // 2}" font-size="10" '
           f'transform="rotate(-90 12 {top + rows * cell // 2})" text-anchor="middle">{html.escape(ylabel)}</text>']
    for j, label in enumerate(columns_text):
        x, y = left + j * cell + cell // 2 + font // 3, top - 6
        svg.append(f'<text x="{x}" y="{y}" font-size="{font}" transform="rotate(-90 {x} {y})">{label}</text>')
    for i, label in enumerate(rows_text):
        svg.append(f'<text x="{left - 6}" y="{top + i * cell + cell // 2 + font // 3}" font-size="{font}" '
                   f'text-anchor="end">{label}</text>')
        for j in range(columns):
            value = matrix[i, j]
            if diverging:
                rgb = _diverging_rgb(value / high)
            else:
                rgb = _sequential_rgb((value - low) / (high - low))
            svg.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                       f'fill="{_hex(rgb)}"><title>{rows_text[i]} → {columns_text[j]}: {value:.4f}</title></rect>')
    svg.append("</svg>\n")
    atomic_write_text(path, "\n".join(svg))
    return path


def _svg_colored_tokens(labels, values, places, lines, path, title, line_width) -> Path:
    char, line_height = 8.4, 22  # a 14 px monospace character is about 8.4 px wide
    width, height = int(char * line_width) + 20, 40 + lines * line_height
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-family="Helvetica" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for label, value, (column, line) in zip(labels, values, places):
        x, y = 10 + column * char, 30 + line * line_height
        svg.append(f'<rect x="{x:.1f}" y="{y}" width="{len(label) * char:.1f}" height="{line_height - 3}" '
                   f'fill="{_hex(_diverging_rgb(value))}"><title>{value:+.3f}</title></rect>')
        svg.append(f'<text x="{x:.1f}" y="{y + 14}" font-family="monospace" font-size="14" '
                   f'xml:space="preserve">{html.escape(label)}</text>')
    svg.append("</svg>\n")
    atomic_write_text(path, "\n".join(svg))
    return path


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _svg_line_plot(series: dict, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    width, height, left, right, top, bottom = 640, 380, 60, 20, 40, 50
    xs_all = np.concatenate([xs for xs, _ in series.values()])
    ys_all = np.concatenate([ys for _, ys in series.values()])
    x0, x1 = float(xs_all.min()), float(xs_all.max())
    y0, y1 = float(ys_all.min()), float(ys_all.max())
    x1, y1 = (x1 if x1 > x0 else x0 + 1.0), (y1 if y1 > y0 else y0 + 1.0)

    def point(x, y):
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return f"{px:.1f},{py:.1f}"

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="Helvetica">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="13" font-weight="bold">{html.escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
           'fill="none" stroke="#999"/>',
           f'<text x="{left}" y="{height - 28}" font-size="10">{x0:.4g}</text>',
           f'<text x="{width - right}" y="{height - 28}" font-size="10" text-anchor="end">{x1:.4g}</text>',
           f'<text x="{width // 2}" y="{height - 10}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>',
           f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">{y0:.4g}</text>',
           f'<text x="{left - 4}" y="{top + 10}" font-size="10" text-anchor="end">{y1:.4g}</text>',
           f'<text x="14" y="{height // 2}" font-size="11" transform="rotate(-90 14 {height // 2})" '
           f'text-anchor="middle">{html.escape(ylabel)}</text>']
    for index, (name, (xs, ys)) in enumerate(series.items()):
        color = _PALETTE[index % len(_PALETTE)]
        points = " ".join(point(x, y) for x, y in zip(xs, ys))
        svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{points}"/>')
        svg.append(f'<text x="{left + 10}" y="{top + 16 + 14 * index}" font-size="11" fill="{color}">'
                   f'{html.escape(name)}</text>')
    svg.append("</svg>\n")
    atomic_write_text(path, "\n".join(svg))
    return path
