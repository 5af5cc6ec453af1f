"""Values in a graph message: constants, node references and tensors, as plain msgpack data.

Everything but ``None``, bools, ints, floats and strings is an array whose first item is a tag:

====  ===============================  ============================================
tag   value                            items
====  ===============================  ============================================
0     list                             the items
1     tuple                            the items
2     dict                             key, value, key, value, ...
3     slice                            start, stop, step
4     ``torch.dtype``                  its name (``"float32"``)
5     ``torch.device``                 its string (``"cuda:0"``)
6     ``torch.Size``                   the sizes
7     ``Ellipsis``
8     tensor                           its index in the message's tensor table
9     node                             its id (only nodes added before this one)
10    module                           its path in the receiving model
11    Hugging Face model output        class module, class name, dict of fields
12    a value that does not travel     (a KV cache in a model output): None there
====  ===============================  ============================================

Tensors travel in a safetensors blob (dtype, shape and raw bytes; never pickle). Decoding
checks every tag, arity and type, nests at most :data:`MAX_DEPTH` deep, and builds nothing but
these values: no class is looked up except a model output's, and only a subclass of
``transformers``' ``ModelOutput`` defined in a ``transformers`` module.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import torch

from ..errors import SerializationError
from ..tracing import Node, Proxy

#: How deep values may nest (a hostile message cannot recurse the decoder to death).
MAX_DEPTH = 64

#: The tensor element types a message may hold.
_ELEMENT_TYPES = (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
    torch.complex128, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.bool,
)  # fmt: skip
DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in _ELEMENT_TYPES}
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}

_LIST, _TUPLE, _DICT, _SLICE, _DTYPE, _DEVICE, _SIZE, _ELLIPSIS = range(8)
_TENSOR, _NODE, _MODULE, _OUTPUT, _DROPPED = range(8, 13)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class Unencodable(Exception):
    """A value the format has no spelling for (the caller names the node and line)."""


class Encoder:
    """Encodes the values of one message, collecting its tensors.

    Args:
        node_id: The id of a node (or a proxy's node) in the message, or None when it is not
            one of the message's nodes.
        module_paths: ``id(module)`` -> its path in the model, for modules as values.
    """

    def __init__(
        self,
        node_id: Callable[[Node | Proxy], int | None] | None = None,
        module_paths: dict[int, str] | None = None,
    ) -> None:
        self.tensors: list[torch.Tensor] = []
        #: id(tensor) -> its index (with the tensor, kept alive): one tensor object in several
        #: places stays one object on the other side (invokes share it rather than batch it).
        self._indices: dict[int, tuple[torch.Tensor, int]] = {}
        self._node_id = node_id
        self._module_paths = module_paths or {}

    def encode(self, value: Any, depth: int = 0) -> Any:
        kind = type(value)
        if value is None or kind in (bool, float, str):
            return value
        if kind is int:
            if not _INT_MIN <= value <= _INT_MAX:
                raise Unencodable(f"the int {value} does not fit in 64 bits")
            return value
        if depth >= MAX_DEPTH:
            raise Unencodable(f"values nest deeper than {MAX_DEPTH}")
        depth += 1
        if kind is list or kind is tuple:
            return [_LIST if kind is list else _TUPLE, *(self.encode(v, depth) for v in value)]
        if kind is dict:
            items: list[Any] = [_DICT]
            for key, item in value.items():
                items += [self.encode(key, depth), self.encode(item, depth)]
            return items
        if kind is slice:
            return [_SLICE, *(self.encode(v, depth) for v in (value.start, value.stop, value.step))]
        if isinstance(value, (Proxy, Node)):
            found = None if self._node_id is None else self._node_id(value)
            if found is not None:
                return [_NODE, found]
            node = value.node if isinstance(value, Proxy) else value
            if node.done() and not node.is_tracing():  # a saved value of an earlier trace
                return self.encode(node.value, depth)
            raise Unencodable("a proxy of another graph")
        if kind is torch.dtype:
            name = _DTYPE_NAMES.get(value)
            if name is None:
                raise Unencodable(f"the dtype {value}")
            return [_DTYPE, name]
        if kind is torch.device:
            return [_DEVICE, str(value)]
        if kind is torch.Size:
            return [_SIZE, *value]
        if value is Ellipsis:
            return [_ELLIPSIS]
        if isinstance(value, torch.Tensor):
            return [_TENSOR, self._tensor(value)]
        if isinstance(value, torch.nn.Module):
            path = self._module_paths.get(id(value))
            if path is None:
                raise Unencodable(f"a {type(value).__name__} that is not part of the model")
            return [_MODULE, path]
        return self._other(value, depth)

    def _tensor(self, tensor: torch.Tensor) -> int:
        if tensor.dtype not in _DTYPE_NAMES or tensor.layout is not torch.strided:
            raise Unencodable(f"a tensor of {tensor.dtype} ({tensor.layout})")
        if tensor.is_meta or (type(tensor) is not torch.Tensor and not _plain(tensor)):
            raise Unencodable(f"a {type(tensor).__name__} on {tensor.device} (no data)")
        known = self._indices.get(id(tensor))
        if known is not None:
            return known[1]
        self.tensors.append(tensor.detach().to("cpu", copy=True).contiguous())
        self._indices[id(tensor)] = (tensor, len(self.tensors) - 1)
        return len(self.tensors) - 1

    def _other(self, value: Any, depth: int) -> Any:
        cache = _cache_types()
        if cache and isinstance(value, cache):
            return [_DROPPED]
        output = _model_output_type()
        if output is not None and isinstance(value, output):
            fields = dict(value.items())  # type: ignore[attr-defined]  # the fields that are set
            kind = type(value)
            return [_OUTPUT, kind.__module__, kind.__qualname__, self.encode(fields, depth)]
        raise Unencodable(f"a {type(value).__name__} ({value!r:.60})")


def _plain(tensor: torch.Tensor) -> bool:
    """A tensor subclass whose data is a plain tensor's (``nn.Parameter``)."""
    return isinstance(tensor, torch.nn.Parameter)


class Decoder:
    """Decodes the values of one message.

    Args:
        tensors: The message's tensor table.
        node: The object standing for node ``id`` (its proxy in the graph being built);
            None when the message may hold no nodes.
        module: The receiving model's module at a path (None: modules are refused).
    """

    def __init__(
        self,
        tensors: list[torch.Tensor],
        node: Callable[[int], Any] | None = None,
        module: Callable[[str], Any] | None = None,
    ) -> None:
        self._tensors = tensors
        self._node = node
        self._module = module

    def decode(self, value: Any, depth: int = 0) -> Any:
        kind = type(value)
        if value is None or kind in (bool, int, float, str):
            return value
        if kind is not list or not value or type(value[0]) is not int:
            raise SerializationError(f"malformed value: {_shown(value)}")
        if depth >= MAX_DEPTH:
            raise SerializationError(f"values nest deeper than {MAX_DEPTH}")
        depth += 1
        tag, items = value[0], value[1:]
        if tag == _LIST:
            return [self.decode(item, depth) for item in items]
        if tag == _TUPLE:
            return tuple(self.decode(item, depth) for item in items)
        if tag == _DICT:
            if len(items) % 2:
                raise SerializationError("malformed dict: an odd number of items")
            keys = [self.decode(item, depth) for item in items[::2]]
            if not all(type(key) in (str, int, float, bool, type(None), tuple) for key in keys):
                raise SerializationError("malformed dict: a key that is not a plain value")
            return dict(zip(keys, (self.decode(item, depth) for item in items[1::2]), strict=True))
        if tag == _SLICE:
            _arity(items, 3, "slice")
            return slice(*(self.decode(item, depth) for item in items))
        if tag == _DTYPE:
            _arity(items, 1, "dtype")
            dtype = DTYPES.get(items[0]) if type(items[0]) is str else None
            if dtype is None:
                raise SerializationError(f"unknown dtype {_shown(items[0])}")
            return dtype
        if tag == _DEVICE:
            _arity(items, 1, "device")
            if type(items[0]) is not str:
                raise SerializationError("malformed device")
            try:
                return torch.device(items[0])
            except (RuntimeError, ValueError):
                raise SerializationError(f"unknown device {_shown(items[0])}") from None
        if tag == _SIZE:
            if not all(type(item) is int for item in items):
                raise SerializationError("malformed torch.Size")
            return torch.Size(items)
        if tag == _ELLIPSIS:
            _arity(items, 0, "Ellipsis")
            return Ellipsis
        if tag == _TENSOR:
            _arity(items, 1, "tensor")
            index = items[0]
            if type(index) is not int or not 0 <= index < len(self._tensors):
                raise SerializationError(f"a tensor index out of range: {_shown(index)}")
            return self._tensors[index]
        if tag == _NODE:
            _arity(items, 1, "node")
            if self._node is None or type(items[0]) is not int:
                raise SerializationError("a node reference where none may be")
            return self._node(items[0])
        if tag == _MODULE:
            _arity(items, 1, "module")
            if self._module is None or type(items[0]) is not str:
                raise SerializationError("a module reference where none may be")
            return self._module(items[0])
        if tag == _OUTPUT:
            _arity(items, 3, "model output")
            return self._model_output(items, depth)
        if tag == _DROPPED:
            return None
        raise SerializationError(f"unknown value tag {tag}")

    def _model_output(self, items: list[Any], depth: int) -> Any:
        module, name, fields = items
        output = _model_output_type()
        if (
            output is None
            or type(module) is not str
            or type(name) is not str
            or not module.startswith("transformers.")
            or "." in name
        ):
            raise SerializationError(f"a model output class {_shown(module)}.{_shown(name)}")
        try:
            kind = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise SerializationError(f"no model output class {module}.{name}") from None
        if not (isinstance(kind, type) and issubclass(kind, output)):
            raise SerializationError(f"{module}.{name} is not a model output class")
        values = self.decode(fields, depth)
        if type(values) is not dict:
            raise SerializationError("malformed model output fields")
        names = {field.name for field in dataclasses.fields(kind)}  # type: ignore[arg-type]
        if not set(values) <= names:
            raise SerializationError(f"{name} has no fields {sorted(set(values) - names)}")
        return kind(**values)


def _arity(items: list[Any], count: int, what: str) -> None:
    if len(items) != count:
        raise SerializationError(f"malformed {what}: {len(items)} items, not {count}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_output_type() -> type | None:
    try:
        from transformers.utils import ModelOutput
    except ImportError:
        return None
    return ModelOutput  # type: ignore[no-any-return]


def _cache_types() -> tuple[type, ...]:
    try:
        from transformers import Cache
    except ImportError:
        return ()
    return (Cache,)
