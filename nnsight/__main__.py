"""Demo: build a small intervention graph by hand, run it, and show what ran and what was freed.

Run with ``python -m nnsight``. Uses a tiny ``nn.Sequential`` built in code (no downloads).
"""

from __future__ import annotations

import torch

from .tracing import Graph


def main() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    inputs = torch.randn(3, 4)

    graph = Graph(model)  # validate=True: every op below is checked on fake tensors
    root = graph.module_proxy
    x = graph.add(target="argument", value=inputs, args=["inputs"])
    hidden = root[1](root[0](x))  # first two layers
    hidden_mean = hidden.mean(dim=-1).save()  # kept: a `null` node listens to it
    edited = hidden * (hidden > 0.5)  # zero small activations
    logits = root[2](edited).save()

    print("Graph (one line per node):")
    print(graph)
    print(f"\nshape known at trace time: logits -> {logits}")

    graph.record_events()
    graph.compile(model)  # sets the root module; nodes needing only it run now
    graph.nodes[graph.argument_node_names["inputs"][0]].set_value(inputs)

    print("\nWhat ran, and what was freed the moment nothing needed it:")
    for kind, name in graph.take_events():
        print(f"  {kind:8s} {name}")

    with torch.no_grad():
        h = model[1](model[0](inputs))
        expected = model[2](h * (h > 0.5))
    same = torch.allclose(logits.value, expected)
    print(f"\nlogits from the graph:\n{logits.value}")
    print(f"plain PyTorch gives the same: {same}")
    print(f"saved hidden mean: {hidden_mean.value}")
    alive = [name for name in graph.nodes if graph.nodes[name].done()]
    print(f"values still alive after the run (saved ones only): {alive}")
    if not same:
        raise SystemExit("graph result differs from plain PyTorch")


if __name__ == "__main__":
    main()
