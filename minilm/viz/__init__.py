"""Pictures of what happens inside: the autograd graph, attention maps, heatmaps.

    from minilm import viz
    g = viz.graph(loss, show_grad=True, params=dict(model.named_parameters()))
    loss.backward()
    print(g.dot)                 # Graphviz DOT text, always available
    g.save("graph.svg")          # rendered by Graphviz's `dot` program when installed

    weights, tokens = viz.attention_map(model, tokenizer, "The cat sat.", layer=0, head=3)
    viz.save_attention_heatmap(weights, tokens, "attention.svg")

    graph_drawing.py  the computational graph behind a tensor (DOT text, Graphviz images)
    attention.py      attention weights of a GPT or BERT for a text (the one part that knows models)
    plots.py          heatmaps, line plots, tokens coloured by a score (SVG by hand, or matplotlib)

Images: a path ending in .svg is written by this package itself (no dependency); any other
suffix (.png, .pdf) is drawn with matplotlib, and when matplotlib is not installed an .svg
is written next to it instead, with a warning. The arrays and the DOT text never need
anything beyond NumPy.
"""

from .attention import attention_map, attention_weights, encode_text, eval_mode, save_attention_heatmap
from .graph_drawing import Graph, GraphEdge, GraphNode, graph
from .plots import ansi_colored, display_token, image_path, save_colored_tokens, save_heatmap, save_line_plot

__all__ = ["Graph", "GraphEdge", "GraphNode", "ansi_colored", "attention_map", "attention_weights", "display_token",
           "encode_text", "eval_mode", "graph", "image_path", "save_attention_heatmap", "save_colored_tokens",
           "save_heatmap", "save_line_plot"]
