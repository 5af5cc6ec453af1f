"""Requests to a worker and its responses, in the graph wire format's envelope.

A request is ``[graph message, invokes, forward kwargs, generate kwargs or None, saved node
ids, include output]``, each invoke ``[args, kwargs, start, size]`` (its prepared inputs and
rows). A response is ``["ok", [[node id, value], ...], output or None]`` or ``["error", type
name, message, node id or None, cause type name or None, cause message, notes]``. Values
use :mod:`nnsight.serialization.values`; tensors travel in the message's safetensors table.
"""

from __future__ import annotations

from typing import Any

from ..errors import ExecutionError, SerializationError
from ..serialization import pack, unpack
from ..serialization.values import Decoder, Encoder, Unencodable


def encode(value: Any, encoder: Encoder, what: str) -> Any:
    try:
        return encoder.encode(value)
    except Unencodable as exc:
        raise SerializationError(f"{what} cannot be sent: it holds {exc}") from None


def request(
    graph: bytes,
    invokes: list[tuple[tuple[Any, ...], dict[str, Any], int, int]],
    forward_kwargs: dict[str, Any],
    generate: dict[str, Any] | None,
    saved: list[int],
    include_output: bool,
) -> bytes:
    encoder = Encoder()
    sent = [
        [
            encode(list(args), encoder, "an invoke's inputs"),
            encode(kwargs, encoder, "an invoke's keyword arguments"),
            start,
            size,
        ]
        for args, kwargs, start, size in invokes
    ]
    body = [
        graph,
        sent,
        encode(forward_kwargs, encoder, "the trace's keyword arguments"),
        None if generate is None else encode(generate, encoder, "generate's keyword arguments"),
        saved,
        include_output,
    ]
    return pack(body, encoder.tensors)


def read_request(data: Any) -> tuple[bytes, list[Any], dict[str, Any], Any, list[int], bool]:
    body, tensors = unpack(data)
    if type(body) is not list or len(body) != 6:
        raise SerializationError("a malformed request")
    graph, raw_invokes, raw_forward, raw_generate, saved, include_output = body
    decoder = Decoder(tensors)
    if type(graph) is not bytes or type(raw_invokes) is not list or not raw_invokes:
        raise SerializationError("a malformed request: no graph, or no invokes")
    invokes = []
    for invoke in raw_invokes:
        if type(invoke) is not list or len(invoke) != 4:
            raise SerializationError("a malformed invoke")
        args, kwargs = decoder.decode(invoke[0]), decoder.decode(invoke[1])
        start, size = invoke[2], invoke[3]
        if type(args) is not list or type(kwargs) is not dict:
            raise SerializationError("a malformed invoke: args or kwargs")
        if not all(type(key) is str for key in kwargs):
            raise SerializationError("a malformed invoke: a keyword that is not a str")
        if type(start) is not int or type(size) is not int or start < 0 or size < 1:
            raise SerializationError("a malformed invoke: rows")
        invokes.append((tuple(args), kwargs, start, size))
    forward = decoder.decode(raw_forward)
    generate = None if raw_generate is None else decoder.decode(raw_generate)
    if type(forward) is not dict or (generate is not None and type(generate) is not dict):
        raise SerializationError("a malformed request: keyword arguments")
    if type(saved) is not list or not all(type(i) is int for i in saved):
        raise SerializationError("a malformed request: saved ids")
    if type(include_output) is not bool:
        raise SerializationError("a malformed request: include_output")
    return graph, invokes, forward, generate, saved, include_output


def session_request(requests: list[bytes]) -> bytes:
    """A session's traces as one request: ``["session", [request, ...]]``."""
    return pack(["session", requests], [])


def session_requests(data: Any) -> list[bytes] | None:
    """The trace requests of a session request; None for a request of one trace."""
    body, _ = unpack(data)
    if type(body) is not list or len(body) != 2 or body[0] != "session":
        return None
    requests = body[1]
    if type(requests) is not list or not requests or not all(type(r) is bytes for r in requests):
        raise SerializationError("a malformed session request")
    return requests  # type: ignore[no-any-return]


def session_response(responses: list[bytes]) -> bytes:
    """``["session", [response, ...]]``: one per trace run, the last an error if one failed."""
    return pack(["session", responses], [])


def read_session_response(data: Any) -> list[bytes]:
    body, _ = unpack(data)
    if type(body) is list and body and body[0] == "error":
        raise SerializationError(
            f"the worker refused the session: {body[2] if len(body) > 2 else body}"
        )
    if type(body) is not list or len(body) != 2 or body[0] != "session":
        raise SerializationError("a malformed session response")
    if type(body[1]) is not list or not all(type(r) is bytes for r in body[1]):
        raise SerializationError("a malformed session response")
    return body[1]  # type: ignore[no-any-return]


def response(values: list[tuple[int, Any]], output: Any) -> bytes:
    encoder = Encoder()
    body = [
        "ok",
        [[id, encode(value, encoder, f"saved node {id}'s value")] for id, value in values],
        encode(output, encoder, "the model's output"),
    ]
    return pack(body, encoder.tensors)


def error_response(exc: BaseException) -> bytes:
    cause = exc.__cause__
    node = getattr(exc, "node_id", None) if isinstance(exc, ExecutionError) else None
    body = [
        "error",
        _type_name(exc),
        str(exc),
        node,
        None if cause is None else _type_name(cause),
        "" if cause is None else str(cause),
        [str(note) for note in getattr(exc, "__notes__", [])],
    ]
    return pack(body, [])


def _type_name(exc: BaseException) -> str:
    """The exception's own class name: ours when it is ours (a ``caused_by`` class keeps it)."""
    return type(exc).__name__


def read_response(data: Any) -> list[Any]:
    body, tensors = unpack(data)
    if type(body) is not list or not body or body[0] not in ("ok", "error"):
        raise SerializationError("a malformed response")
    if body[0] == "error":
        if len(body) != 7:
            raise SerializationError("a malformed error response")
        return body
    if len(body) != 3 or type(body[1]) is not list:
        raise SerializationError("a malformed response")
    decoder = Decoder(tensors)
    values = []
    for item in body[1]:
        if type(item) is not list or len(item) != 2 or type(item[0]) is not int:
            raise SerializationError("a malformed response value")
        values.append((item[0], decoder.decode(item[1])))
    return ["ok", values, decoder.decode(body[2])]
