"""Plots: labelled heatmaps, line plots, and tokens coloured by a score (text or image).

Images: a path ending in .svg is written by this module itself (no dependency); any other
suffix (.png, .pdf) is drawn with matplotlib, and when matplotlib is not installed an .svg
is written next to it instead, with a warning (`image_path` picks the suffix that will be
written without one). Only NumPy is needed for the SVG.
"""

from __future__ import annotations

import html
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np

from ..data import atomic_write_text


def image_path(stem) -> Path:
    """`stem` + ".png" when matplotlib is installed, else + ".svg" (written without it)."""
    suffix = ".png" if importlib.util.find_spec("matplotlib") is not None else ".svg"
    return Path(str(stem) + suffix)


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


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) in [low, high], about `count` of them."""
    if not high > low:
        return [low]
    raw = (high - low) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    ticks = [(first + i) * step for i in range(int((high - low) / step) + 2)]
    return [round(t, 12) for t in ticks if low - 1e-9 * step <= t <= high + 1e-9 * step]


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
           f'<text x="{width // 2}" y="{height - 10}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>',
           f'<text x="14" y="{height // 2}" font-size="11" transform="rotate(-90 14 {height // 2})" '
           f'text-anchor="middle">{html.escape(ylabel)}</text>']
    # The axes: a tick, a faint grid line and a label at each round value.
    for x in nice_ticks(x0, x1):
        px = float(point(x, y0).split(",")[0])
        svg += [f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{height - bottom + 5}" stroke="#e4e4e4"/>',
                f'<line x1="{px:.1f}" y1="{height - bottom}" x2="{px:.1f}" y2="{height - bottom + 5}" stroke="#333"/>',
                f'<text x="{px:.1f}" y="{height - bottom + 17}" font-size="10" text-anchor="middle">{x:g}</text>']
    for y in nice_ticks(y0, y1):
        py = float(point(x0, y).split(",")[1])
        svg += [f'<line x1="{left - 5}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="#e4e4e4"/>',
                f'<line x1="{left - 5}" y1="{py:.1f}" x2="{left}" y2="{py:.1f}" stroke="#333"/>',
                f'<text x="{left - 7}" y="{py + 3:.1f}" font-size="10" text-anchor="end">{y:g}</text>']
    for index, (name, (xs, ys)) in enumerate(series.items()):
        color = _PALETTE[index % len(_PALETTE)]
        points = " ".join(point(x, y) for x, y in zip(xs, ys))
        svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{points}"/>')
        svg.append(f'<text x="{left + 10}" y="{top + 16 + 14 * index}" font-size="11" fill="{color}">'
                   f'{html.escape(name)}</text>')
    svg.append("</svg>\n")
    atomic_write_text(path, "\n".join(svg))
    return path
