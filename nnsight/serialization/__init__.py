"""The graph wire format: an intervention graph as a safe, versioned message.

``dumps(graph) -> bytes`` and ``loads(data, model) -> Graph``; the format is described in
``docs/wire-format.md``. A message is ``MAGIC`` (8 bytes), the format version (2 bytes, big
endian) and a msgpack body (msgspec): the nodes, in the order they were added, each as its
kind, target name, node name (None when automatic: the receiver names alike), args and
kwargs, and a safetensors blob of the tensors they hold. The per-node loops are the core's
(``export_records``, ``import_records``); Python spells what they hand back. No pickle and
no code: targets are names from an allowlist (:mod:`nnsight.serialization.targets`), values
are data (:mod:`nnsight.serialization.values`).

``dumps`` refuses, before anything is sent, a graph holding anything else (a user's function
via ``tracer.apply``, a lambda, an arbitrary object), naming the node and the user's line.
``loads`` refuses truncated, corrupted or hostile bytes with ``SerializationError`` and runs
nothing while reading; the graph it builds runs under guards that keep it from reaching
beyond the activations (see ``targets``).

Needs the ``remote`` extra (``msgspec``, ``safetensors``).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import struct
from collections.abc import Iterator
from typing import Any

import torch

from .._core import ROOT_ARGUMENT, export_records, import_records
from ..errors import SerializationError
from ..intervention.graph import InterventionGraph
from ..tracing import Graph, Node, Proxy
from ..tracing._source import format_source, skip_directory
from ..tracing.Node import target_name
from . import targets
from .values import Decoder, Encoder, Unencodable

skip_directory(os.path.dirname(os.path.abspath(__file__)))  # never "the user's line"

__all__ = ["FORMAT_VERSION", "MAGIC", "MESSAGE_SOURCE", "SerializationError", "dumps", "loads"]

MAGIC = b"NNSIGHT\x00"
#: The format version this build writes and reads.
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sH")
_KINDS = ("op", "argument", "swap", "null", "grad")
_EMPTY = inspect._empty


def _msgpack() -> Any:
    try:
        import msgspec
    except ImportError:  # pragma: no cover  (the remote extra is missing)
        raise ImportError(
            "the graph wire format needs msgspec and safetensors: pip install '.[remote]' "
            "from a checkout of nnsight"
        ) from None
    return msgspec


def pack(body: Any, tensors: list[torch.Tensor]) -> bytes:
    """A message: the header, then ``[body, tensor blob]`` as msgpack."""
    from safetensors.torch import save

    blob = save({str(i): tensor for i, tensor in enumerate(tensors)}) if tensors else b""
    return _HEADER.pack(MAGIC, FORMAT_VERSION) + _msgpack().msgpack.encode([body, blob])


def unpack(data: Any) -> tuple[Any, list[torch.Tensor]]:
    """The body and the tensor table of a message; ``SerializationError`` for anything that
    is not one of this version."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"a message is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise SerializationError(f"a message of {len(data)} bytes is shorter than its header")
    magic, version = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SerializationError("not an nnsight graph message (wrong magic bytes)")
    if version != FORMAT_VERSION:
        raise SerializationError(
            f"the message is in wire format version {version}, and this nnsight reads "
            f"version {FORMAT_VERSION}"
        )
    msgspec = _msgpack()
    try:
        decoded = msgspec.msgpack.decode(data[_HEADER.size :])
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"a corrupted message: {exc}") from None
    if type(decoded) is not list or len(decoded) != 2 or type(decoded[1]) is not bytes:
        raise SerializationError("a corrupted message: not [body, tensors]")
    body, blob = decoded
    return body, _tensors(blob)


def _tensors(blob: bytes) -> list[torch.Tensor]:
    if not blob:
        return []
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        named = load(blob)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise SerializationError(f"a corrupted tensor table: {exc}") from None
    if set(named) != {str(i) for i in range(len(named))}:
        raise SerializationError("a corrupted tensor table: names are not 0..n-1")
    return [named[str(i)] for i in range(len(named))]


@contextlib.contextmanager
def _no_collections() -> Iterator[None]:
    """The cyclic collector off: a message of n nodes makes ~5n containers, each a tracked
    object, and every few thousand set off a collection that walks all of torch's objects
    (~130 ms each here). Nothing made here forms a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def dumps(graph: Graph) -> bytes:
    """``graph`` as a message. Raises ``SerializationError`` naming the first node that cannot
    travel (its target has no wire name, or an argument no spelling) and its user line."""
    with _no_collections():
        return _dumps(graph)


def _dumps(graph: Graph) -> bytes:
    core = graph._core
    root = graph.module_proxy.node._proxy_value
    paths = {}
    if isinstance(root, torch.nn.Module):
        paths = {id(m): name for name, m in root.named_modules(remove_duplicate=False)}

    def node_id(item: Node | Proxy) -> int | None:
        found = item.node if isinstance(item, Proxy) else item
        return found.id if found._core is core else None

    encoder = Encoder(node_id, paths)

    def record(id: int) -> list[Any]:
        """A node the core does not spell by itself, or one whose error needs its line."""
        node = graph._node(id)
        kind = core.kind(id)
        name = kind if kind != "op" else targets.name_of(node.target, paths)
        if name is None:
            why = (
                f"its target {target_name(node.target)} is not a torch, operator or model "
                "function (a function of your own cannot travel)"
            )
            raise _cannot(node, why)
        try:
            args = encoder.encode(node.args)
            kwargs = encoder.encode(node.kwargs)
        except Unencodable as exc:
            raise _cannot(node, f"an argument is {exc}") from None
        return [_KINDS.index(kind), name, core.explicit_name(id), args, kwargs]

    records = export_records(
        core, lambda target: targets.name_of(target, paths), encoder.encode, record
    )
    return pack(records, encoder.tensors)


def _cannot(node: Node, why: str) -> SerializationError:
    return SerializationError(
        f"node '{node.name}' (traced at {format_source(node.source)}) cannot be sent: {why}"
    )


def loads(data: bytes, model: torch.nn.Module | None = None) -> InterventionGraph:
    """The graph a message holds, rooted at ``model`` (module targets resolve against it).

    Runs nothing: the nodes are added with validation off. Raises ``SerializationError`` for
    anything malformed, hostile or of another format version (see the module docs).
    """
    with _no_collections():
        return _loads(data, model)


def _loads(data: bytes, model: torch.nn.Module | None) -> InterventionGraph:
    records, tensors = unpack(data)
    if type(records) is not list:
        raise SerializationError("a corrupted message: the nodes are not a list")
    graph = InterventionGraph(model, validate=False)  # type: ignore[arg-type]
    guards = targets.Guards(model)
    added: list[int] = [0]  # nodes so far (the root), as `node` may refer to them

    def node(id: int) -> Any:
        if not 0 <= id < added[0]:
            raise SerializationError(f"a reference to node {id}, which is not an earlier node")
        return graph._node(id)

    def module(path: str) -> Any:
        return targets.resolve(f"module:{path}", model, guards)

    decoder = Decoder(tensors, node, module)

    def resolve(name: Any) -> Any:
        return targets.resolve(name, model, guards)

    def no_node(id: int) -> Any:
        raise _NotFlat

    constants = Decoder(tensors, no_node, module)

    def constant(item: Any) -> Any:
        """A tagged value without nodes, for the core to keep as a constant; raises for one the
        node's Python walk must take (a node inside, or a tensor inside a container)."""
        value = constants.decode(item)
        if isinstance(value, (list, tuple, dict, slice)) and _holds_tensor(value):
            raise _NotFlat
        return value

    def add(record: Any, id: int) -> None:
        added[0] = id
        _add(graph, record, decoder, model, guards, id)

    try:
        import_records(graph._core, records, resolve, constant, add, graph._nodes, MESSAGE_SOURCE)
    except ValueError as exc:  # from the core: a duplicate name, a second root...
        if isinstance(exc, SerializationError):
            raise
        raise SerializationError(f"a malformed graph: {exc}") from None
    return graph


def _add(
    graph: Graph,
    record: Any,
    decoder: Decoder,
    model: torch.nn.Module | None,
    guards: targets.Guards,
    index: int,
) -> Proxy:
    if type(record) is not list or len(record) != 5:
        raise SerializationError(f"node {index}: not [kind, target, name, args, kwargs]")
    kind, name, node_name, raw_args, raw_kwargs = record
    if type(kind) is not int or not 0 <= kind < len(_KINDS):
        raise SerializationError(f"node {index}: malformed kind")
    if node_name is not None and type(node_name) is not str:  # None: an automatic name
        raise SerializationError(f"node {index}: malformed name")
    reserved = _KINDS[kind]
    if (reserved == "op") == (name in _KINDS):
        raise SerializationError(f"node {index} ({node_name!r}): kind and target disagree")
    target = targets.resolve(name, model, guards)
    args = decoder.decode(raw_args)
    kwargs = decoder.decode(raw_kwargs)
    if (
        type(args) is not list
        or type(kwargs) is not dict
        or any(type(k) is not str for k in kwargs)
    ):
        raise SerializationError(f"node {index} ({node_name!r}): malformed args or kwargs")
    if reserved == "argument" and (not args or args[0] == ROOT_ARGUMENT):
        raise SerializationError(f"node {index}: a second root, or an argument without a key")
    if "out" in kwargs and reserved == "op":
        target = guards.in_place(name, target)
    if reserved == "grad":
        graph._has_grads = True  # batched invokes then rebuild activations from their rows
    try:
        proxy = graph.add(target, _EMPTY, args, kwargs, node_name)
    except (ValueError, TypeError) as exc:  # a duplicate name, an argument key not a str...
        raise SerializationError(f"node {index} ({node_name!r}): {exc}") from None
    if proxy._id != index:
        raise SerializationError(f"node {index} ({node_name!r}) was added out of order")
    graph._node(index).source = (MESSAGE_SOURCE, index)
    return proxy


class _NotFlat(Exception):
    """A value the core cannot keep as a constant: the node goes to Python's walk."""


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, slice):
        return any(_holds_tensor(v) for v in (value.start, value.stop, value.step))
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_tensor(item) for item in value.values())
    return False


#: The file of the line nodes read from a message are traced at, ``(MESSAGE_SOURCE, id)``:
#: the sender's lines stay with it, and it maps ``<node>:<id>`` in messages back to them.
MESSAGE_SOURCE = "<node>"
