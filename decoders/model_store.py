"""Model files without pickle: explicit arrays, an allowlist of classes, hashes in a manifest.

A model file (``*.bcimodel``) is a zip archive holding

``model.json``
    ``{"format": "bci-runtime-model", "format_version": 1, "libraries": {...},
    "root": NODE}``: the object tree of the model, as JSON;
``arrays/<n>.npy``
    every numpy array of the tree, written with ``np.save(allow_pickle=False)``
    and read with ``allow_pickle=False`` (object arrays are refused both ways).

A ``NODE`` is a JSON ``null``, boolean, integer, finite float, string or list
(a Python list), or a tagged object ``{"$": TAG, ...}``:

=============  ==================================================================
TAG            stands for
=============  ==================================================================
``float``      ``nan``, ``inf`` or ``-inf`` (``"v"``)
``complex``    a Python complex (``"v"``: ``[re, im]``)
``bytes``      ``bytes`` (``"v"``: base64)
``tuple``,     the container of ``"items"``
``set``,
``frozenset``
``dict``       a dict with string keys (``"v"``: a JSON object of nodes)
``kdict``      a dict with other keys (``"items"``: ``[[key, value], ...]``)
``ndarray``    the array in zip member ``"member"``
``scalar``     a numpy bool/int/float scalar (``"dtype"``, ``"v"``)
``scalar0d``   any other numpy scalar, as a 0-d array in ``"member"``
``dtype``      a numpy dtype (``"v"``: ``dtype.str`` or a structured ``descr``)
``type``       a class used as a value (``"class"``), e.g. ``dtype=np.float64``
``random``     a ``np.random.RandomState`` or ``Generator`` (``"kind"``,
               ``"bit_generator"``, ``"state"``: its explicit state)
``object``     an instance (``"class"``: ``"module:qualname"``, ``"id"``, ``"via"``)
``ref``        the object or random generator with that ``"id"``, seen before
=============  ==================================================================

An ``object`` is stored ``via``

``to_state``
    its ``to_state()`` dict when the class also has a ``from_state`` classmethod
    (the torch decoders); rebuilt with ``cls.from_state(state)``;
``new``
    its ``__dict__`` (or ``__getstate__()`` when that is a dict, e.g.
    scikit-learn's, which records its version); rebuilt with ``cls.__new__(cls)``
    then ``__setstate__(state)`` when the class defines it, else
    ``__dict__.update(state)``;
``call``
    its constructor arguments, when its class declares a ``__reduce__`` that
    returns ``(the class itself, plain arguments[, dict state])`` (the Cython
    loss objects of ``SGDClassifier``, enum members): rebuilt with
    ``cls(*args)`` then ``__setstate__(state)``; a class that does not declare
    ``__reduce__`` is never called on load.

Nothing else: not pickle's other reduce forms, not functions, not modules. A
``str`` subclass (torch's ``TorchVersion``) is stored as its text. An object
shared in two places (``CoAdaptiveDecoder.classes_`` and its decoder's)
is stored once and is shared again after loading; the same holds for arrays
(a list or dict shared in two places comes back as two equal copies). A
random ``Generator`` keeps its bit generator's state, not its ``SeedSequence``
(``spawn`` after loading differs).

Why this is safe to load
    Only data are decoded: JSON and plain-dtype ``.npy`` members. The only code a
    file can make run is the rebuilding of classes whose module is on the
    allowlist (:data:`DEFAULT_ALLOWED_MODULES` plus what the caller adds); a
    class is found by importing its (allowed) module and walking its qualified
    name, and must be a class defined there. A pickle (including a joblib or
    ``torch.save`` file) is recognised and refused without being read further.
    Integrity is the manifest's job: :func:`load_version` checks the file's
    SHA-256 against ``models.json`` before parsing anything.

Models folder
    ``models.json`` maps a version (a string) to ``{"file", "sha256",
    "parent", "created", ...}`` (``metrics`` and anything else JSON-able may be
    added). :func:`save_version` writes a version and its entry,
    :func:`load_version` loads one after checking its hash. One writer per folder.

Files are written atomically (temporary file, fsync, rename), and the bytes
are deterministic: the same model saved twice gives the same SHA-256.
"""

from __future__ import annotations

import base64
import contextlib
import copyreg
import datetime as _dt
import enum
import functools
import hashlib
import importlib
import io
import json
import math
import os
import re
import sys
import tempfile
import types
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.errors import ModelFileError, NotFittedError

__all__ = [
    "DEFAULT_ALLOWED_MODULES",
    "EXTENSION",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "add_version_file",
    "file_sha256",
    "load_model",
    "load_version",
    "read_manifest",
    "save_model",
    "save_version",
    "write_manifest",
]

FORMAT = "bci-runtime-model"
FORMAT_VERSION = 1
EXTENSION = ".bcimodel"
MODEL_JSON = "model.json"
MANIFEST = "models.json"
MANIFEST_FORMAT = "bci-runtime-models"
MANIFEST_VERSION = 1

#: Modules (and their submodules) whose classes a model file may rebuild.
DEFAULT_ALLOWED_MODULES: tuple[str, ...] = (
    "bci_runtime.decoders", "sklearn", "pyriemann", "mne.decoding",
)

_BUILTIN_TYPES = {t.__name__: t for t in (bool, int, float, complex, str, bytes)}
_BIT_GENERATORS = ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64")
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                   types.BuiltinMethodType, functools.partial, np.ufunc, types.ModuleType)
_ARRAY_MEMBER = re.compile(r"arrays/[0-9]+\.npy")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same model gives the same bytes
_NEVER = "pickles are never loaded"
_SAVE_HINT = "save models with bci_runtime.decoders.model_store.save_model"


# -- allowlist ----------------------------------------------------------------------------

def _allowlist(extra: Iterable[str]) -> tuple[str, ...]:
    if isinstance(extra, str):  # a lone string would allow each of its letters
        extra = (extra,)
    return DEFAULT_ALLOWED_MODULES + tuple(p.strip(".") for p in extra if p.strip("."))


def _is_allowed(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in allowed)


def _not_allowed(module: str, qualname: str, allowed: tuple[str, ...], where: str,
                 ) -> ModelFileError:
    return ModelFileError(
        f"{where}: class {module}.{qualname} is not allowed in a model file (allowed "
        f"modules: {', '.join(allowed)})",
        hint="if you trust it, pass allowed_modules=[...] naming its module; or give the "
        "class to_state()/from_state()")


# -- encoding -----------------------------------------------------------------------------

class _Encoder:
    """Turns an object tree into JSON nodes and a list of arrays (see the module docstring)."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed
        self.arrays: dict[str, np.ndarray] = {}
        self.libraries: set[str] = {"numpy"}
        # id(obj) -> (obj, node); keeping obj alive keeps its id from being reused
        self._seen: dict[int, tuple[Any, Any]] = {}
        self._open: set[int] = set()  # lists/dicts being encoded, to catch cycles
        self._next_id = 0

    def _refuse(self, where: str, what: str, hint: str | None = None) -> ModelFileError:
        return ModelFileError(f"cannot store {where}: {what}", hint=hint)

    def encode(self, value: Any, where: str) -> Any:
        t = type(value)
        if value is None or t is bool or t is int or t is str:
            return value
        if t is float:
            return _encode_float(value)
        if t is complex:
            return {"$": "complex", "v": [_encode_float(value.real), _encode_float(value.imag)]}
        if t is bytes:
            return {"$": "bytes", "v": base64.b64encode(value).decode("ascii")}
        if t in (list, tuple, set, frozenset, dict):
            return self._container(value, where)
        if isinstance(value, np.ndarray):
            return self._array(value, where)
        if isinstance(value, np.generic):
            return self._scalar(value, where)
        if isinstance(value, np.dtype):
            return {"$": "dtype", "v": self._dtype(value, where)}
        if isinstance(value, type):
            return {"$": "type", "class": self._type_name(value, where)}
        if isinstance(value, (np.random.RandomState, np.random.Generator)):
            return self._random(value, where)
        if isinstance(value, str) and not isinstance(value, enum.Enum):
            return str(value)  # e.g. torch's TorchVersion: only the text is data
        if isinstance(value, _FUNCTION_TYPES):
            raise self._refuse(where, f"{value!r} is a function or module; only data can be "
                               "stored without pickle",
                               hint="store its name as a string parameter instead")
        return self._object(value, where)

    def _container(self, value: Any, where: str) -> Any:
        key = id(value)
        if key in self._open:
            raise self._refuse(where, f"a {type(value).__name__} that contains itself")
        self._open.add(key)
        self._seen.setdefault(key, (value, None))  # keep alive while open
        try:
            if type(value) is list:
                return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
            if type(value) is tuple:
                return {"$": "tuple",
                        "items": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
            if type(value) in (set, frozenset):
                try:  # sorted when possible, so equal sets give equal bytes
                    members = sorted(value)
                except TypeError:
                    members = list(value)
                return {"$": type(value).__name__,
                        "items": [self.encode(v, f"{where}{{}}") for v in members]}
            if all(type(k) is str for k in value):
                return {"$": "dict",
                        "v": {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
            return {"$": "kdict",
                    "items": [[self.encode(k, f"{where} key {k!r}"),
                               self.encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
        finally:
            self._open.discard(key)

    def _array(self, value: np.ndarray, where: str) -> dict[str, Any]:
        if type(value) is not np.ndarray:
            raise self._refuse(where, f"an array subclass ({type(value).__name__})",
                               hint="store np.asarray(...) of it")
        if value.dtype.hasobject:
            raise self._refuse(where, f"an array of dtype {value.dtype} (objects can only be "
                               "stored with pickle)",
                               hint="use a numeric, bool or str dtype")
        seen = self._seen.get(id(value))
        if seen is not None and seen[1] is not None:
            return seen[1]
        member = f"arrays/{len(self.arrays)}.npy"
        self.arrays[member] = value
        node = {"$": "ndarray", "member": member}
        self._seen[id(value)] = (value, node)
        return node

    def _scalar(self, value: np.generic, where: str) -> dict[str, Any]:
        dtype = value.dtype
        if dtype.hasobject:
            raise self._refuse(where, "a numpy object scalar")
        if dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize <= 8):
            item = value.item()
            return {"$": "scalar", "dtype": dtype.str,
                    "v": _encode_float(item) if dtype.kind == "f" else item}
        # longdouble, complex, str, bytes, datetime, void: exact through a 0-d .npy
        member = f"arrays/{len(self.arrays)}.npy"
        self.arrays[member] = np.asarray(value)
        return {"$": "scalar0d", "member": member}

    def _dtype(self, dtype: np.dtype, where: str) -> Any:
        if dtype.hasobject:
            raise self._refuse(where, f"dtype {dtype} holds objects")
        if dtype.names is None and dtype.subdtype is None:
            return dtype.str
        return self.encode(dtype.descr, where)

    def _type_name(self, cls: type, where: str) -> str:
        if _BUILTIN_TYPES.get(cls.__name__) is cls:
            return f"builtins:{cls.__name__}"
        if issubclass(cls, np.generic) and getattr(np, cls.__name__, None) is cls:
            return f"numpy:{cls.__name__}"
        module, qualname = self._class_name(cls, where)
        return f"{module}:{qualname}"

    def _class_name(self, cls: type, where: str) -> tuple[str, str]:
        module, qualname = cls.__module__, cls.__qualname__
        if "<locals>" in qualname or "<" in module:
            raise self._refuse(where, f"class {qualname} is defined inside a function, so it "
                               "cannot be found again when loading",
                               hint="define it at the top level of a module")
        if not _is_allowed(module, self.allowed):
            raise _not_allowed(module, qualname, self.allowed, f"cannot store {where}")
        self.libraries.add(module.split(".")[0])
        return module, qualname

    def _new_id(self, value: Any) -> int:
        self._next_id += 1
        self._seen[id(value)] = (value, {"$": "ref", "id": self._next_id})
        return self._next_id

    def _random(self, value: Any, where: str) -> dict[str, Any]:
        seen = self._seen.get(id(value))
        if seen is not None and seen[1] is not None:
            return seen[1]
        if isinstance(value, np.random.RandomState):
            kind, state = "RandomState", value.get_state(legacy=False)
        else:
            kind, state = "Generator", value.bit_generator.state
        name = state.get("bit_generator") if isinstance(state, dict) else None
        if name not in _BIT_GENERATORS:
            raise self._refuse(where, f"a {kind} on bit generator {name!r}",
                               hint=f"use one of {', '.join(_BIT_GENERATORS)}")
        return {"$": "random", "kind": kind, "bit_generator": name, "id": self._new_id(value),
                "state": self.encode(state, f"{where}.state")}

    def _object(self, value: Any, where: str) -> dict[str, Any]:
        seen = self._seen.get(id(value))
        if seen is not None and seen[1] is not None:
            return seen[1]
        cls = type(value)
        module, qualname = self._class_name(cls, where)
        name = f"{module}:{qualname}"
        state: Any = None
        if callable(getattr(value, "to_state", None)) and callable(
                getattr(cls, "from_state", None)):
            try:
                state = value.to_state()
            except NotFittedError:
                state = None  # unfitted: its hyper-parameters, like any estimator
            else:
                if not isinstance(state, dict):
                    raise self._refuse(where, f"{cls.__name__}.to_state() returned a "
                                       f"{type(state).__name__}, not a dict")
                node_id = self._new_id(value)
                return {"$": "object", "class": name, "id": node_id, "via": "to_state",
                        "state": self.encode(state, f"{where}.to_state()")}
        try:
            reduced = value.__reduce_ex__(4)  # interpreted below, its callable is never stored
        except Exception as exc:  # noqa: BLE001 - any failure means it cannot be stored
            raise self._refuse(where, f"{cls.__name__} cannot be reduced to data ({exc})",
                               hint="give the class to_state()/from_state()") from exc
        if isinstance(reduced, str) or not isinstance(reduced, tuple) or len(reduced) < 2:
            raise self._refuse(where, f"{cls.__name__} is a global singleton, not data")
        func, args, state, listitems, dictitems = (tuple(reduced) + (None,) * 5)[:5]
        if listitems is not None or dictitems is not None:
            raise self._refuse(where, f"{cls.__name__} is a list or dict subclass",
                               hint="store a plain list or dict")
        if func is copyreg.__newobj__ and args == (cls,):
            node_id = self._new_id(value)
            node: dict[str, Any] = {"$": "object", "class": name, "id": node_id, "via": "new"}
            if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
                node["slots"] = self.encode(state[1], where)  # (dict or None, slots)
                state = state[0]
            if state is None:
                state = {}
            if not isinstance(state, dict):
                raise self._refuse(where, f"{cls.__name__}.__getstate__() returned a "
                                   f"{type(state).__name__}, not a dict",
                                   hint="give the class to_state()/from_state()")
            node["state"] = self._attributes(state, where)
            return node
        if func is cls and isinstance(args, tuple) and (state is None or isinstance(state, dict)):
            node_id = self._new_id(value)
            node = {"$": "object", "class": name, "id": node_id, "via": "call",
                    "args": [self.encode(a, f"{where}(arg {i})") for i, a in enumerate(args)]}
            if state is not None:
                node["state"] = self._attributes(state, where)
            return node
        raise self._refuse(where, f"{cls.__name__} can only be rebuilt by calling "
                           f"{getattr(func, '__qualname__', func)!r}, which needs pickle",
                           hint="give the class to_state()/from_state()")

    def _attributes(self, state: dict[Any, Any], where: str) -> dict[str, Any]:
        if not all(type(k) is str for k in state):
            raise self._refuse(where, "an object state with non-string attribute names")
        return {"$": "dict", "v": {k: self.encode(v, f"{where}.{k}") for k, v in state.items()}}


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {"$": "float", "v": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}


# -- decoding -----------------------------------------------------------------------------

class _Decoder:
    """Rebuilds an object tree from its JSON nodes and the zip's array members."""

    def __init__(self, zf: zipfile.ZipFile, allowed: tuple[str, ...]) -> None:
        self.zf = zf
        self.allowed = allowed
        self.names = set(zf.namelist())
        self.arrays: dict[str, np.ndarray] = {}
        self.objects: dict[int, Any] = {}

    @staticmethod
    def _bad(where: str, what: str) -> ModelFileError:
        return ModelFileError(f"model file is damaged or forged at {where}: {what}")

    def _field(self, node: dict[str, Any], key: str, kind: type, where: str) -> Any:
        value = node.get(key)
        if type(value) is not kind:  # JSON gives exact types; this also keeps bools out of ints
            raise self._bad(where, f"'{node.get('$')}' node needs '{key}' of type "
                            f"{kind.__name__}")
        return value

    def decode(self, node: Any, where: str) -> Any:
        t = type(node)
        if node is None or t in (bool, int, float, str):
            return node
        if t is list:
            return [self.decode(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if t is not dict:
            raise self._bad(where, f"unexpected JSON value {node!r}")
        tag = node.get("$")
        handler = getattr(self, f"_tag_{tag}", None) if isinstance(tag, str) else None
        if handler is None:
            raise self._bad(where, f"unknown node tag {tag!r}")
        return handler(node, where)

    def _items(self, node: dict[str, Any], where: str) -> list[Any]:
        return [self.decode(v, f"{where}[{i}]")
                for i, v in enumerate(self._field(node, "items", list, where))]

    def _tag_float(self, node: dict[str, Any], where: str) -> float:
        v = self._field(node, "v", str, where)
        if v not in ("nan", "inf", "-inf"):
            raise self._bad(where, f"float {v!r}")
        return float(v)

    def _tag_complex(self, node: dict[str, Any], where: str) -> complex:
        v = self._field(node, "v", list, where)
        parts = [self.decode(p, where) for p in v]
        if len(parts) != 2 or not all(type(p) in (int, float) for p in parts):
            raise self._bad(where, "complex needs [re, im]")
        return complex(parts[0], parts[1])

    def _tag_bytes(self, node: dict[str, Any], where: str) -> bytes:
        try:
            return base64.b64decode(self._field(node, "v", str, where), validate=True)
        except ValueError as exc:
            raise self._bad(where, f"bytes: {exc}") from exc

    def _tag_tuple(self, node: dict[str, Any], where: str) -> tuple[Any, ...]:
        return tuple(self._items(node, where))

    def _tag_set(self, node: dict[str, Any], where: str) -> set[Any]:
        return set(self._items(node, where))

    def _tag_frozenset(self, node: dict[str, Any], where: str) -> frozenset[Any]:
        return frozenset(self._items(node, where))

    def _tag_dict(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        v = self._field(node, "v", dict, where)
        return {k: self.decode(item, f"{where}[{k!r}]") for k, item in v.items()}

    def _tag_kdict(self, node: dict[str, Any], where: str) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for i, pair in enumerate(self._field(node, "items", list, where)):
            if not isinstance(pair, list) or len(pair) != 2:
                raise self._bad(where, "dict items must be [key, value] pairs")
            key = self.decode(pair[0], f"{where} key {i}")
            try:
                out[key] = self.decode(pair[1], f"{where}[{key!r}]")
            except TypeError as exc:  # an unhashable key
                raise self._bad(where, f"dict key {key!r}: {exc}") from exc
        return out

    def _tag_ndarray(self, node: dict[str, Any], where: str) -> np.ndarray:
        return self._read_array(self._field(node, "member", str, where), where)

    def _tag_scalar(self, node: dict[str, Any], where: str) -> np.generic:
        dtype = self._plain_dtype(self._field(node, "dtype", str, where), where)
        if dtype.kind not in "biuf":
            raise self._bad(where, f"scalar of dtype {dtype}")
        value = self.decode(node.get("v"), where)
        if type(value) not in ((bool,) if dtype.kind == "b" else (int,) if dtype.kind in "iu"
                               else (int, float)):
            raise self._bad(where, f"scalar value {value!r} for dtype {dtype}")
        try:
            return dtype.type(value)
        except (OverflowError, ValueError) as exc:
            raise self._bad(where, f"scalar {value!r}: {exc}") from exc

    def _tag_scalar0d(self, node: dict[str, Any], where: str) -> np.generic:
        arr = self._read_array(self._field(node, "member", str, where), where)
        if arr.ndim != 0:
            raise self._bad(where, f"scalar member of shape {arr.shape}")
        return arr[()]

    def _tag_dtype(self, node: dict[str, Any], where: str) -> np.dtype:
        v = node.get("v")
        if isinstance(v, str):
            return self._plain_dtype(v, where)
        try:
            dtype = np.dtype(self.decode(v, where))
        except (TypeError, ValueError) as exc:
            raise self._bad(where, f"dtype: {exc}") from exc
        if dtype.hasobject:
            raise self._bad(where, "a dtype holding objects")
        return dtype

    def _plain_dtype(self, text: str, where: str) -> np.dtype:
        try:
            dtype = np.dtype(text)
        except (TypeError, ValueError) as exc:
            raise self._bad(where, f"dtype {text!r}: {exc}") from exc
        if dtype.hasobject:
            raise self._bad(where, "a dtype holding objects")
        return dtype

    def _tag_type(self, node: dict[str, Any], where: str) -> type:
        spec = self._field(node, "class", str, where)
        module, _, qualname = spec.partition(":")
        if module == "builtins" and qualname in _BUILTIN_TYPES:
            return _BUILTIN_TYPES[qualname]
        if module == "numpy":
            found = getattr(np, qualname, None)
            if isinstance(found, type) and issubclass(found, np.generic):
                return found
            raise self._bad(where, f"numpy:{qualname} is not a numpy scalar type")
        return self._resolve(spec, where)

    def _tag_random(self, node: dict[str, Any], where: str) -> Any:
        kind = self._field(node, "kind", str, where)
        name = self._field(node, "bit_generator", str, where)
        node_id = self._new_id(node, where)
        if kind not in ("RandomState", "Generator") or name not in _BIT_GENERATORS:
            raise self._bad(where, f"random generator {kind}/{name}")
        state = self.decode(node.get("state"), f"{where}.state")
        try:
            bitgen = getattr(np.random, name)()
            if kind == "RandomState":
                rng: Any = np.random.RandomState(bitgen)
                rng.set_state(state)
            else:
                bitgen.state = state
                rng = np.random.Generator(bitgen)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise self._bad(where, f"{kind} state: {exc}") from exc
        self.objects[node_id] = rng
        return rng

    def _tag_ref(self, node: dict[str, Any], where: str) -> Any:
        node_id = self._field(node, "id", int, where)
        if node_id not in self.objects:
            raise self._bad(where, f"reference to object {node_id}, not (yet) defined")
        return self.objects[node_id]

    def _new_id(self, node: dict[str, Any], where: str) -> int:
        node_id = self._field(node, "id", int, where)
        if node_id in self.objects:
            raise self._bad(where, f"object id {node_id} defined twice")
        return node_id

    def _tag_object(self, node: dict[str, Any], where: str) -> Any:
        spec = self._field(node, "class", str, where)
        cls = self._resolve(spec, where)  # before anything else: a refused class runs nothing
        node_id = self._new_id(node, where)
        via = node.get("via")
        label = f"{where} ({cls.__module__}.{cls.__qualname__})"
        if via == "to_state":
            from_state = getattr(cls, "from_state", None)
            if not callable(from_state):
                raise self._bad(label, "stored through to_state but the class has no from_state")
            state = self.decode(node.get("state"), f"{where}.to_state()")
            if not isinstance(state, dict):
                raise self._bad(label, "to_state() state is not a dict")
            obj = self._rebuild(label, from_state, state)
            self.objects[node_id] = obj
            return obj
        if via == "new":
            obj = self._rebuild(label, cls.__new__, cls)
            self.objects[node_id] = obj  # before its state: the state may refer back to it
            state = self._state(node, where)
            slots = self.decode(node["slots"], where) if "slots" in node else None
            if slots is not None and not isinstance(slots, dict):
                raise self._bad(label, "slots are not a dict")
            self._set_state(label, obj, state, slots)
            return obj
        if via == "call":
            if (cls.__reduce_ex__ is object.__reduce_ex__
                    and cls.__reduce__ is object.__reduce__):
                # only a class that itself asks to be rebuilt by a call is called
                raise self._bad(label, "the class does not declare __reduce__; it is not "
                                "rebuilt by calling it")
            args = self.decode(self._field(node, "args", list, where), f"{where}(args)")
            obj = self._rebuild(label, cls, *args)
            self.objects[node_id] = obj
            if "state" in node:
                self._set_state(label, obj, self._state(node, where), None)
            return obj
        raise self._bad(label, f"unknown rebuild method {via!r}")

    def _state(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        state = self.decode(node.get("state"), where)
        if not isinstance(state, dict) or not all(type(k) is str for k in state):
            raise self._bad(where, "object state is not a dict of attribute names")
        return state

    @staticmethod
    def _rebuild(label: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except ModelFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a class raises on bad data
            raise ModelFileError(f"cannot rebuild {label} from the model file: "
                                 f"{type(exc).__name__}: {exc}",
                                 hint="the file was written by other library versions, or "
                                 "was forged") from exc

    def _set_state(self, label: str, obj: Any, state: dict[str, Any],
                   slots: dict[str, Any] | None) -> None:
        def apply() -> None:
            setstate = getattr(obj, "__setstate__", None)
            if setstate is not None:
                setstate(state if slots is None else (state, slots))
                return
            obj.__dict__.update(state)
            for key, value in (slots or {}).items():
                setattr(obj, key, value)

        self._rebuild(label, apply)

    def _resolve(self, spec: str, where: str) -> type:
        """The class ``module:qualname``, after checking the allowlist; never pickle or eval."""
        module, sep, qualname = spec.partition(":")
        parts = qualname.split(".")
        if (not sep or not all(p.isidentifier() for p in module.split("."))
                or not all(p.isidentifier() for p in parts)):
            raise self._bad(where, f"class name {spec!r}")
        if not _is_allowed(module, self.allowed):
            raise _not_allowed(module, qualname, self.allowed, f"model file {where}")
        try:
            found: Any = importlib.import_module(module)
        except ImportError as exc:
            raise ModelFileError(f"model file {where}: class {module}.{qualname} cannot be "
                                 f"imported ({exc})",
                                 hint="install the libraries (and versions) that wrote it"
                                 ) from exc
        for part in parts:
            found = getattr(found, part, None)
        if (not isinstance(found, type) or found.__module__ != module
                or found.__qualname__ != qualname):
            raise ModelFileError(f"model file {where}: {module}.{qualname} is not a class "
                                 "defined there",
                                 hint="the file was written by other library versions, or "
                                 "was forged")
        return found

    def _read_array(self, member: str, where: str) -> np.ndarray:
        if member in self.arrays:
            return self.arrays[member]
        if not _ARRAY_MEMBER.fullmatch(member) or member not in self.names:
            raise self._bad(where, f"array member {member!r} is missing")
        try:
            arr = np.lib.format.read_array(io.BytesIO(self.zf.read(member)),
                                           allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise  # truncated or malformed: reported as a damaged file
            raise ModelFileError(f"model file array {member} ({where}) holds Python objects, "
                                 f"which only pickle can read; {_NEVER}") from exc
        if type(arr) is not np.ndarray or arr.dtype.hasobject:
            raise self._bad(where, f"array member {member} is not a plain array")
        self.arrays[member] = arr
        return arr


# -- files --------------------------------------------------------------------------------

def _describe_foreign(data: bytes) -> str | None:
    """What ``data`` is when it is certainly not one of our zip files, else None."""
    head = data[:64]
    if not head:
        return "an empty file"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    if head[0] == 0x80 and len(head) > 1 and head[1] <= 5:
        return f"a Python pickle (protocol {head[1]}; joblib and torch.save write these too)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the model (run git lfs pull)"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy array file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head[:1] in (b"{", b"["):
        return "a JSON or text file"
    if head[:2] in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda") or head.startswith(
            b"ZF"):
        return "a zlib-compressed file (a compressed joblib pickle?)"
    if head[:1] in (b"(", b"c", b"]", b"}"):
        return "probably a protocol-0/1 Python pickle"
    return f"not a zip archive (starts with {head[:8]!r})"


def _describe_foreign_zip(names: list[str]) -> str:
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "a torch.save checkpoint (a zip holding a pickle, data.pkl)"
    if names and all(n.endswith(".npy") for n in names):
        return "a numpy .npz archive"
    return f"a zip archive without {MODEL_JSON}"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # the rename itself survives a power loss once the folder is synced too
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _library_versions(names: set[str]) -> dict[str, str]:
    out = {}
    for name in sorted(names):
        top = sys.modules.get(name)
        version = getattr(top, "__version__", None)
        if isinstance(version, str):
            out[name] = version
    return out


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model: Any, path: str | os.PathLike[str], *,
               allowed_modules: Iterable[str] = ()) -> str:
    """Write ``model`` to a model file, atomically; return the file's SHA-256.

    Parameters
    ----------
    model : object
        A fitted (or unfitted) estimator, or any tree of objects, containers,
        numbers, strings and numpy arrays (see the module docstring).
    path : path-like
        Where to write it (``*.bcimodel`` by convention). Missing parent
        folders are created; an existing file is replaced.
    allowed_modules : iterable of str, optional
        Modules, besides :data:`DEFAULT_ALLOWED_MODULES`, whose classes the file
        may hold. Loading needs the same list: checking it here means a model
        that could not be loaded is never written.

    Returns
    -------
    str
        SHA-256 hex digest of the bytes written (what a manifest records).

    Raises
    ------
    ModelFileError
        Something in the model cannot be stored without pickle (an object
        array, a function, a class outside the allowlist, ...): names where in
        the model it is. Or the file cannot be written. Nothing was written.
    """
    path = Path(path)
    encoder = _Encoder(_allowlist(allowed_modules))
    root = encoder.encode(model, "model")
    header = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "libraries": _library_versions(encoder.libraries), "root": root}
    text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _write_member(zf, MODEL_JSON, text.encode("utf-8"))
        for member, arr in encoder.arrays.items():
            npy = io.BytesIO()
            np.save(npy, arr, allow_pickle=False)
            _write_member(zf, member, npy.getvalue())
    data = buf.getvalue()
    try:
        _atomic_write(path, data)
    except OSError as exc:
        raise ModelFileError(f"cannot write model file {path}: {exc}") from exc
    return hashlib.sha256(data).hexdigest()


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def load_model(path: str | os.PathLike[str], *, sha256: str | None = None,
               allowed_modules: Iterable[str] = ()) -> Any:
    """Read a model file written by :func:`save_model`; never unpickles anything.

    Loading builds a new object: whatever model is serving is not touched,
    whether this succeeds or fails.

    Parameters
    ----------
    path : path-like
        The model file.
    sha256 : str, optional
        The SHA-256 hex digest the manifest records; checked on the bytes read,
        before anything is parsed (and the same bytes are then parsed).
    allowed_modules : iterable of str, optional
        Modules, besides :data:`DEFAULT_ALLOWED_MODULES`, whose classes may be
        rebuilt.

    Returns
    -------
    object
        The model, predicting as the saved one did.

    Raises
    ------
    ModelFileError
        The file is missing; its hash differs from ``sha256`` (tampered with,
        or not the file the manifest names); it is not a model file of ours (a
        pickle, a ``torch.save`` or joblib file, a zip without ``model.json``,
        a newer format version); it is truncated or damaged; or it names a
        class outside the allowlist.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelFileError(f"model file {path} does not exist",
                             hint="check the models folder and its models.json") from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc}") from exc
    if sha256 is not None:
        expected = str(sha256).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise ModelFileError(f"expected hash for {path} is not a SHA-256 hex digest: "
                                 f"{sha256!r}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            foreign = _describe_foreign(data)
            also = f"; it is not even a model file: {foreign} ({_NEVER})" if foreign else ""
            raise ModelFileError(
                f"model file {path} has SHA-256 {actual}, but {expected} was expected: it was "
                f"tampered with or is not the file the manifest names{also}",
                hint="restore the file, or load the version the manifest really names")
    return _load_bytes(data, str(path), _allowlist(allowed_modules))


def _load_bytes(data: bytes, name: str, allowed: tuple[str, ...]) -> Any:
    foreign = _describe_foreign(data)
    if foreign:
        raise ModelFileError(f"{name} is not a bci-runtime model file: it is {foreign}; "
                             f"{_NEVER}", hint=_SAVE_HINT)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if MODEL_JSON not in names:
                raise ModelFileError(f"{name} is not a bci-runtime model file: it is "
                                     f"{_describe_foreign_zip(names)}; {_NEVER}",
                                     hint=_SAVE_HINT)
            header = json.loads(zf.read(MODEL_JSON).decode("utf-8"),
                                parse_constant=_refuse_constant)
            _check_header(header, name)
            return _Decoder(zf, allowed).decode(header["root"], "model")
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
            UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, RecursionError,
            NotImplementedError) as exc:
        raise ModelFileError(f"model file {name} is damaged or truncated: "
                             f"{type(exc).__name__}: {exc}",
                             hint="restore it from a copy; its hash will not match the "
                             "manifest either") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _check_header(header: Any, name: str) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise ModelFileError(f"{name} is not a bci-runtime model file (its {MODEL_JSON} "
                             f"says format {fmt!r}); {_NEVER}", hint=_SAVE_HINT)
    version = header.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"{name}: format_version {version!r} is not a version")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{name} was written in model format version {version}; this "
                             f"bci-runtime reads up to version {FORMAT_VERSION}",
                             hint="upgrade bci-runtime to load it")
    if "root" not in header:
        raise ModelFileError(f"{name}: {MODEL_JSON} has no 'root' object tree")


# -- models folder ------------------------------------------------------------------------

def _entry_file(folder: Path, version: str, entry: Any) -> tuple[Path, str]:
    if not isinstance(entry, dict):
        raise ModelFileError(f"{folder / MANIFEST}: version {version!r} is not an object")
    file, digest = entry.get("file"), entry.get("sha256")
    if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
        raise ModelFileError(f"{folder / MANIFEST}: version {version!r} names file {file!r}; "
                             "it must be a file name inside the folder")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ModelFileError(f"{folder / MANIFEST}: version {version!r} has no valid sha256")
    return folder / file, digest


def write_manifest(folder: str | os.PathLike[str],
                   entries: Mapping[str | int, Mapping[str, Any]]) -> Path:
    """Write ``models.json`` of a models folder, atomically.

    Parameters
    ----------
    folder : path-like
    entries : mapping
        Version (str or int; stored as a string) to its entry: ``file`` (a name
        in ``folder``), ``sha256`` (hex), ``parent`` (a version or None),
        ``created`` (ISO 8601), and any JSON-able extras (``metrics``, ...).

    Returns
    -------
    Path
        The manifest written.
    """
    folder = Path(folder)
    versions: dict[str, dict[str, Any]] = {}
    for version, entry in entries.items():
        key = str(version)
        if not isinstance(entry, Mapping):
            raise ModelFileError(f"manifest entry of version {key!r} is not a mapping")
        _entry_file(folder, key, dict(entry))
        versions[key] = dict(entry)
    doc = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "versions": versions}
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"manifest entries are not JSON-able: {exc}",
                             hint="metrics must be plain numbers, strings, lists and dicts"
                             ) from exc
    path = folder / MANIFEST
    try:
        _atomic_write(path, (text + "\n").encode("utf-8"))
    except OSError as exc:
        raise ModelFileError(f"cannot write {path}: {exc}") from exc
    return path


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The entries of a models folder's ``models.json``, version (str) to entry.

    Raises
    ------
    ModelFileError
        The manifest is missing, not JSON, not ours, or an entry lacks a file
        name or a SHA-256.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except FileNotFoundError as exc:
        raise ModelFileError(f"no {MANIFEST} in {folder}",
                             hint="save models with save_version() to create it") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path} cannot be read: {exc}") from exc
    if (not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT
            or not isinstance(doc.get("versions"), dict)):
        raise ModelFileError(f"{path} is not a bci-runtime models manifest")
    if type(doc.get("format_version")) is not int or doc["format_version"] > MANIFEST_VERSION:
        raise ModelFileError(f"{path} has manifest version {doc.get('format_version')!r}; "
                             f"this bci-runtime reads up to {MANIFEST_VERSION}",
                             hint="upgrade bci-runtime")
    for version, entry in doc["versions"].items():
        _entry_file(folder, version, entry)
    return doc["versions"]


def save_version(folder: str | os.PathLike[str], model: Any, version: str | int, *,
                 parent: str | int | None = None, metrics: Mapping[str, Any] | None = None,
                 allowed_modules: Iterable[str] = ()) -> dict[str, Any]:
    """Save ``model`` as ``version`` in a models folder and record it in ``models.json``.

    The model file is written first, then the manifest: a crash in between
    leaves an unlisted file, never a listed version without its file.

    Parameters
    ----------
    folder : path-like
    model : object
    version : str or int
        Replaces an existing entry of the same version.
    parent : str or int, optional
        The version it was derived from.
    metrics : mapping, optional
        JSON-able figures (accuracy, trials, ...).
    allowed_modules : iterable of str, optional
        As in :func:`save_model`.

    Returns
    -------
    dict
        The manifest entry written.
    """
    folder, key = Path(folder), _version_key(version)
    file = f"model-{key}{EXTENSION}"
    digest = save_model(model, folder / file, allowed_modules=allowed_modules)
    return _list_version(folder, key, file, digest, parent, metrics)


def add_version_file(folder: str | os.PathLike[str], data: bytes, version: str | int, *,
                     parent: str | int | None = None,
                     metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Like :func:`save_version`, for a model file's bytes kept as they are.

    A model that came as a file (a calibration profile) keeps its SHA-256 in the
    models folder; nothing is decoded or re-encoded here.
    """
    folder, key = Path(folder), _version_key(version)
    file = f"model-{key}{EXTENSION}"
    try:
        _atomic_write(folder / file, data)
    except OSError as exc:
        raise ModelFileError(f"cannot write model file {folder / file}: {exc}") from exc
    return _list_version(folder, key, file, hashlib.sha256(data).hexdigest(), parent, metrics)


def _version_key(version: str | int) -> str:
    key = str(version)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", key):
        raise ModelFileError(f"model version {key!r} must be letters, digits, '.', '_' or '-'")
    return key


def _list_version(folder: Path, key: str, file: str, digest: str,
                  parent: str | int | None, metrics: Mapping[str, Any] | None
                  ) -> dict[str, Any]:
    """Record a written version file in ``models.json``; the entry."""
    entries = read_manifest(folder) if (folder / MANIFEST).exists() else {}
    entry = {"file": file, "sha256": digest, "parent": None if parent is None else str(parent),
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "metrics": dict(metrics or {})}
    entries[key] = entry
    write_manifest(folder, entries)
    return entry


def load_version(folder: str | os.PathLike[str], version: str | int, *,
                 allowed_modules: Iterable[str] = ()) -> Any:
    """Load one version of a models folder, checking its file against the manifest's hash.

    Raises
    ------
    ModelFileError
        Unknown version (the message lists the known ones), a missing file, a
        hash that differs from the manifest, or any error of :func:`load_model`.
    """
    folder = Path(folder)
    entries = read_manifest(folder)
    key = str(version)
    if key not in entries:
        raise ModelFileError(f"{folder / MANIFEST} has no version {key!r}",
                             hint=f"known versions: {', '.join(entries) or 'none'}")
    path, digest = _entry_file(folder, key, entries[key])
    return load_model(path, sha256=digest, allowed_modules=allowed_modules)
