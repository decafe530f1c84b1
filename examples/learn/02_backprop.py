"""02 - Backpropagation by hand, then by autograd, on one tiny graph.

    python examples/learn/02_backprop.py [--out learn_out]

One neuron and a squared error:

    z = w1*x1 + w2*x2 + b        y = tanh(z)        L = (y - target)^2

Backpropagation is the chain rule applied from the output back: each node multiplies the
gradient arriving from above ("upstream") by its own local derivative and passes it down.

    dL/dy = 2 (y - target)
    dL/dz = dL/dy * (1 - y^2)          (tanh' = 1 - tanh^2)
    dL/dw1 = dL/dz * x1,  dL/dw2 = dL/dz * x2,  dL/db = dL/dz * 1

The script does these steps with plain floats, then lets minilm's autograd do them, checks
both against finite differences, prints the trace of the ops autograd ran (backward is the
forward in reverse), and draws the graph with each gradient on its edge.
"""

import argparse
import math
from pathlib import Path

import minilm as ml
from minilm import viz
from minilm.trace import Trace

VALUES = {"x1": 2.0, "x2": -1.0, "w1": -0.5, "w2": 0.8, "b": 0.3}
TARGET = 0.5


def loss_of(v: dict) -> float:
    y = math.tanh(v["w1"] * v["x1"] + v["w2"] * v["x2"] + v["b"])
    return (y - TARGET) ** 2


def by_hand(v: dict) -> dict:
    z = v["w1"] * v["x1"] + v["w2"] * v["x2"] + v["b"]
    y = math.tanh(z)
    dL_dy = 2 * (y - TARGET)
    dL_dz = dL_dy * (1 - y * y)
    return {"z": z, "y": y, "L": (y - TARGET) ** 2, "dL/dy": dL_dy, "dL/dz": dL_dz,
            "w1": dL_dz * v["x1"], "w2": dL_dz * v["x2"], "b": dL_dz, "x1": dL_dz * v["w1"], "x2": dL_dz * v["w2"]}


def by_finite_differences(v: dict, eps: float = 1e-6) -> dict:
    grads = {}
    for name in v:
        up, down = dict(v), dict(v)
        up[name] += eps
        down[name] -= eps
        grads[name] = (loss_of(up) - loss_of(down)) / (2 * eps)
    return grads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    args = parser.parse_args(argv)
    out = Path(args.out)

    hand = by_hand(VALUES)
    print(f"forward:  z = {hand['z']:.4f}   y = tanh(z) = {hand['y']:.4f}   "
          f"L = (y - {TARGET})^2 = {hand['L']:.4f}")
    print(f"backward: dL/dy = 2 (y - target) = {hand['dL/dy']:.4f}   "
          f"dL/dz = dL/dy (1 - y^2) = {hand['dL/dz']:.4f}\n")

    # The same computation with autograd (float64, so all three columns agree closely).
    leaves = {name: ml.tensor(value, dtype=ml.float64, requires_grad=True) for name, value in VALUES.items()}
    for name, t in leaves.items():
        t.name = name
    with Trace() as trace:
        z = leaves["w1"] * leaves["x1"] + leaves["w2"] * leaves["x2"] + leaves["b"]
        y = z.tanh()
        loss = (y - TARGET) ** 2
        graph = viz.graph(loss, show_grad=True)  # captured now: backward frees the graph
        loss.backward()

    numeric = by_finite_differences(VALUES)
    print(f"{'gradient':<8} {'by hand':>10} {'autograd':>10} {'finite diff':>12}")
    worst = 0.0
    for name in VALUES:
        auto = leaves[name].grad.item()
        worst = max(worst, abs(auto - hand[name]), abs(auto - numeric[name]))
        print(f"dL/d{name:<4} {hand[name]:10.6f} {auto:10.6f} {numeric[name]:12.6f}")
    print(f"largest disagreement: {worst:.2e}\n")

    print("what autograd ran (the backward rows are the forward rows in reverse):")
    print(trace.table())
    picture = graph.save(out / "02_backprop_graph.svg")
    print(f"\nthe graph, with the gradient norm on every edge: {picture}")
    return worst


if __name__ == "__main__":
    main()
