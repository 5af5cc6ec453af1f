"""Per-node cost of the public tracing API, side by side with the pure-Python reference model.

Measures, for a chain (each op uses the previous one) and a fan-out (every op uses one input):
  * add:      ``graph.add`` per node, validation off (and on, for validation's own cost), and
              the share of it CPython spent in full garbage collections;
  * compile:  resetting the graph for a run, per node;
  * execute:  setting the input and running every node, per node, and that minus the cost of
              calling the target itself (``operator.add`` on ints), i.e. the scheduler's share.
The reference model (tests/reference_graph.py) implements the same semantics in plain Python.
Each figure is the best of a few repeats; compare the columns measured in the same run.

Run: ``python benches/bench_tracing.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import operator
import os
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from reference_graph import RefGraph

from nnsight import Graph

EMPTY = inspect._empty


def best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def timed(fn: Callable[[], object], full_gc: FullCollections | None = None) -> float:
    """Seconds `fn` takes, starting from a collected heap; `full_gc` is told about the full
    collections that happen during the call."""
    gc.collect()
    if full_gc is not None:
        gc.callbacks.append(full_gc)
    start = time.perf_counter()
    try:
        fn()
        return time.perf_counter() - start
    finally:
        if full_gc is not None:
            gc.callbacks.remove(full_gc)


class FullCollections:
    """Time CPython spends in full (generation 2) collections while active. Each one walks
    every live object, torch's ~186k included, so on large builds it is a share of `add` that
    depends on the heap, not on the graph."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start


def build_ours(shape: str, n: int, validate: bool = False, value: object = 0):
    graph = Graph(None, validate=validate)
    x = graph.add(target="argument", value=value, args=["x"])

    def build() -> None:
        prev = x
        for _ in range(n):
            prev = graph.add(operator.add, EMPTY, [prev if shape == "chain" else x, 1])
        graph.add("null", None, [prev])

    return graph, x, build


def build_ref(shape: str, n: int):
    graph = RefGraph()
    x = graph.add("argument", args=["x"])

    def build() -> None:
        prev = x
        for _ in range(n):
            prev = graph.add(operator.add, [prev if shape == "chain" else x, 1])
        graph.add("null", [prev])

    return graph, x, build


def measure(shape: str, n: int, repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for impl in ("ours", "ref"):
        adds, compiles, executes = [], [], []
        for _ in range(repeats):
            graph, x, build = (build_ours if impl == "ours" else build_ref)(shape, n)
            full_gc = FullCollections()
            adds.append((timed(build, full_gc), full_gc.seconds))
            compiles.append(timed(lambda: graph.compile(None)))  # noqa: B023
            node = x.node if impl == "ours" else x
            executes.append(timed(lambda: node.set_value(0)))  # noqa: B023
        add, add_gc = min(adds)
        out[f"{impl}_add"] = add / n
        out[f"{impl}_add_gc"] = add_gc / n
        out[f"{impl}_compile"] = min(compiles) / n
        out[f"{impl}_execute"] = min(executes) / n

    def direct() -> float:
        value = 0
        start = time.perf_counter()
        for _ in range(n):
            value = operator.add(value, 1)
        return time.perf_counter() - start

    out["target"] = best(direct, repeats) / n
    return out


def measure_validation(n: int, repeats: int) -> dict[str, float]:
    """Per-op cost of validated vs unvalidated adds of a cheap tensor op."""
    out = {}
    for validate in (False, True):

        def run() -> float:
            value = torch.ones(4, 4)
            build_ours("chain", n, validate=validate, value=value)[2]()  # noqa: B023  (warm caches)
            return timed(build_ours("chain", n, validate=validate, value=value)[2])  # noqa: B023

        out["on" if validate else "off"] = best(run, repeats) / n
    return out


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    options = parser.parse_args()
    sizes = [1_000, 10_000] if options.quick else [1_000, 10_000, 100_000]
    repeats = 1 if options.quick else 3
    torch.set_num_threads(1)

    print(f"per-node cost in microseconds (best of {repeats}); ref = pure-Python reference model")
    print(
        "| shape | nodes | add ours | of which full GC | add ref | compile ours | compile ref "
        "| execute ours | execute ref | execute ours minus target |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape in ("chain", "fan_out"):
        for n in sizes:
            r = measure(shape, n, repeats)
            print(
                f"| {shape} | {n} | {us(r['ours_add'])} | {us(r['ours_add_gc'])} "
                f"| {us(r['ref_add'])} "
                f"| {us(r['ours_compile'])} | {us(r['ref_compile'])} "
                f"| {us(r['ours_execute'])} | {us(r['ref_execute'])} "
                f"| {us(r['ours_execute'] - r['target'])} |"
            )
    v = measure_validation(200 if options.quick else 500, repeats)
    print(
        f"\nvalidation (x + 1 on a 4x4 tensor, fake tensors, warm caches): add with validation "
        f"{us(v['on'])} us/op, without {us(v['off'])} us/op -> validation itself "
        f"{us(v['on'] - v['off'])} us/op"
    )


if __name__ == "__main__":
    main()
