import os
import sys

# The reference model (tests/reference_graph.py) is imported by tests and benchmarks alike.
sys.path.insert(0, os.path.dirname(__file__))
# No model hub here: a missing model fails at once instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
