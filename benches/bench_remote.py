"""The graph wire format and remote execution (CPU, one torch thread):

  * wire:       dumps + loads per node, and bytes per node, for 1,000- and 100,000-node graphs:
                a chain (``v * 1.0001 + 1``, each op reading the last) and a trace-like mix
                (module reads, indexing, torch functions, saves).      target <= 2 us/node
  * round trip: a small trace (read a block, edit one, save the logits) on a worker of a
                local Ray cluster against the same trace locally: the overhead in ms.
  * throughput: requests per second on one worker with 1, 4 and 16 concurrent clients
                (threads, each with its own model wrapper).

Run: ``python benches/bench_remote.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import torch

from nnsight import Graph, LanguageModel
from nnsight.models.tiny import save_language_model
from nnsight.serialization import dumps, loads

PROMPT = "The Eiffel Tower is in the city of"


def chain(size: int) -> Graph:
    graph = Graph(None, validate=False)
    value = graph.module_proxy
    for _ in range(size // 2):
        value = value * 1.0001 + 1
    value.save()
    return graph


def mixed(size: int) -> Graph:
    """Argument reads, getitem with slices, torch functions with keywords, saves."""
    graph = Graph(torch.nn.Linear(4, 4), validate=False)
    made = 1
    while made < size:
        read = graph.add(target="argument", value=None, args=[f".layer.output.{made}", 1, 0])
        part = read[:, -1]
        torch.softmax(part * 2.0, dim=-1).save()
        made += 6  # the read, getitem, mul, softmax, null, and the root's share
    return graph


def best(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_wire(repeats: int) -> None:
    for make in (chain, mixed):
        for size in (1_000, 100_000):
            graph = make(size)
            nodes = len(graph.nodes)
            data = dumps(graph)
            out = best(lambda g=graph: dumps(g), repeats)
            back = best(lambda d=data: loads(d), repeats)
            print(
                f"wire {make.__name__:5} {nodes:>7} nodes: dumps {out / nodes * 1e6:5.2f} + loads "
                f"{back / nodes * 1e6:5.2f} = {(out + back) / nodes * 1e6:5.2f} us/node, "
                f"{len(data) / nodes:5.1f} bytes/node"
            )


def bench_remote(repeats: int) -> None:
    import ray

    from nnsight import remote

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    directory = save_language_model(tempfile.mkdtemp(), "gpt2")
    remote.serve(directory)
    model = LanguageModel(directory, dispatch=True)

    def trace(where: bool | None, client: LanguageModel = model) -> torch.Tensor:
        with torch.no_grad(), client.trace(PROMPT, remote=where):
            hidden = client.transformer.h[0].output[0]
            client.transformer.h[1].output[0][:, -1] = hidden[:, -1]
            logits = client.lm_head.output.save()
        return logits.value

    assert torch.equal(trace(None), trace(True))
    local = [best(lambda: trace(None), 1) for _ in range(repeats)]
    far = [best(lambda: trace(True), 1) for _ in range(repeats)]
    print(
        f"round trip: local {statistics.median(local) * 1e3:.2f} ms, remote "
        f"{statistics.median(far) * 1e3:.2f} ms -> overhead "
        f"{(statistics.median(far) - statistics.median(local)) * 1e3:.2f} ms (medians)"
    )
    per_client = max(repeats, 5) * 4
    for clients in (1, 4, 16):
        wrappers = [LanguageModel(directory) for _ in range(clients)]
        for wrapper in wrappers:
            trace(True, wrapper)  # each client's first scan, outside the clock

        def work(wrapper: LanguageModel) -> None:
            for _ in range(per_client):
                trace(True, wrapper)

        threads = [threading.Thread(target=work, args=(w,)) for w in wrappers]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        print(f"throughput: {clients:2} clients: {clients * per_client / seconds:6.1f} requests/s")
    remote.stop(directory)
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    repeats = 3 if options.quick else 7
    bench_wire(repeats)
    bench_remote(repeats)


if __name__ == "__main__":
    main()
