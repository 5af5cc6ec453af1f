"""Property tests of the invoke batching rules against a row-by-row oracle: any split of a
batch into invokes, any structure of tensors, swaps of any invoke's rows."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnsight.intervention.batching import Rows, batch_size_of, combine, map_tensors, narrow, splice


@st.composite
def splits(draw: st.DrawFn) -> list[int]:
    return draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))


def rows_of(sizes: list[int]) -> list[Rows]:
    total, start, rows = sum(sizes), 0, []
    for size in sizes:
        rows.append(Rows(start, size, total))
        start += size
    return rows


@settings(max_examples=60, deadline=None)
@given(sizes=splits(), width=st.integers(1, 3), swapped=st.integers(0, 3))
def test_narrow_splice_and_combine_agree_with_row_by_row_editing(
    sizes: list[int], width: int, swapped: int
) -> None:
    # One object passed by every invoke: shared, not batched. (Its first dimension must differ
    # from the batch's: a tensor as long as the batch is taken as batched, by design.)
    shared = torch.ones(100)
    parts = [(torch.randn(size, width), torch.randn(size), shared) for size in sizes]
    batch = combine(parts)
    # combine: batched tensors concatenated, shared ones (equal, not batched) kept once
    assert torch.equal(batch[0], torch.cat([p[0] for p in parts]))
    assert batch[2] is shared
    rows = rows_of(sizes)
    for part, row in zip(parts, rows, strict=True):
        view = narrow(batch, row)
        assert torch.equal(view[0], part[0]) and torch.equal(view[1], part[1])
        assert view[2] is shared
    # A swap of one invoke's rows changes exactly those rows.
    target = rows[swapped % len(rows)]
    new = (torch.full((target.size, width), 9.0), torch.zeros(target.size), batch[2])
    result = splice(batch, new, target, "test swap")
    expected = [p[0].clone() for p in parts]
    expected[swapped % len(rows)] = new[0]
    assert torch.equal(result[0], torch.cat(expected))
    assert torch.equal(result[0].narrow(0, target.start, target.size), new[0])


@settings(max_examples=30, deadline=None)
@given(sizes=splits())
def test_in_place_edits_of_a_narrowed_view_reach_the_batch(sizes: list[int]) -> None:
    batch = torch.zeros(sum(sizes), 2)
    for i, row in enumerate(rows_of(sizes)):
        narrow(batch, row)[:] = i
    expected = torch.cat([torch.full((size, 2), float(i)) for i, size in enumerate(sizes)])
    assert torch.equal(batch, expected)


def _first_batched_by_walk(inputs: object) -> int:
    found: list[int] = []
    map_tensors(inputs, lambda t: found.append(t.shape[0]) if t.dim() > 0 else None)
    return found[0] if found else 1


@settings(max_examples=60, deadline=None)
@given(
    leaves=st.lists(st.sampled_from(["scalar", "rows2", "rows5", "int"]), max_size=4),
    nest=st.booleans(),
    as_kwarg=st.booleans(),
)
def test_batch_size_is_the_first_dimension_of_the_first_batched_tensor(
    leaves: list[str], nest: bool, as_kwarg: bool
) -> None:
    # The fast path (first leaf) and the full walk must agree on any arrangement.
    made = {
        "scalar": lambda: torch.tensor(1.0),
        "rows2": lambda: torch.zeros(2, 3),
        "rows5": lambda: torch.zeros(5),
        "int": lambda: 7,
    }
    items: list[object] = [made[leaf]() for leaf in leaves]
    args: tuple[object, ...] = (tuple(items),) if nest else tuple(items)
    inputs = ((), {"x": args}) if as_kwarg else (args, {})
    assert batch_size_of(inputs) == _first_batched_by_walk(inputs)
