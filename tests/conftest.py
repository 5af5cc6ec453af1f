import os
import sys

import pytest

# The reference model (tests/reference_graph.py) is imported by tests and benchmarks alike.
sys.path.insert(0, os.path.dirname(__file__))
# No model hub here: a missing model fails at once instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


if os.environ.get("NNSIGHT_WIRE_ROUNDTRIP"):
    # Every local trace runs as a remote one would: its graph and inputs go through the wire
    # format to a worker in this process holding the same model, and the saved values and the
    # output come back through it (`make test-wire`).
    from nnsight.intervention.tracer import Tracer
    from nnsight.remote.client import run_remotely
    from nnsight.remote.worker import Worker

    _local_run = Tracer._run

    def _round_trip(self: Tracer) -> None:
        # What does not travel yet (skips, caches, sessions) runs here, as remote=True refuses.
        local = self._skips or self._caches or self.graph._session_block is not None
        if self.remote is not None or not self._invokes or local:
            return _local_run(self)
        self.graph.tracing = False
        self.remote_include_output = True
        self.output = run_remotely(self, Worker.serving(self.model).run)
        return None

    Tracer._run = _round_trip  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "local_only(why): checks what only a local run has (a user function, internal state, "
        "autograd history); skipped when NNSIGHT_WIRE_ROUNDTRIP sends traces over the wire",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("NNSIGHT_WIRE_ROUNDTRIP"):
        return
    for item in items:
        marker = item.get_closest_marker("local_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"local only: {marker.args[0]}"))
