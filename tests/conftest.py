import os
import sys

# The reference model (tests/reference_graph.py) is imported by tests and benchmarks alike.
sys.path.insert(0, os.path.dirname(__file__))
