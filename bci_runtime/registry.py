"""The node registry: maps the ``type:`` names used in pipeline files to node classes.

Nodes are found through the ``bci_runtime.nodes`` entry-point group, so any
installed package can add nodes (bci-runtime's own are declared the same way in
its ``pyproject.toml``)::

    [project.entry-points."bci_runtime.nodes"]
    my_filter = "my_package.nodes:MyFilter"

Classes can also be registered at run time with :func:`register_node` (worker
processes re-import them by module path, see :func:`runtime_registrations`), or
named directly in a pipeline as ``type: my_package.nodes:MyFilter``. Entry points
are loaded lazily: resolving one type imports only its module.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from importlib.metadata import EntryPoint, entry_points

from bci_runtime.errors import UnknownNodeTypeError
from bci_runtime.node import Node

ENTRY_POINT_GROUP = "bci_runtime.nodes"

_registered: dict[str, type[Node]] = {}
_lock = threading.Lock()


def register_node(cls: type[Node]) -> type[Node]:
    """Register a node class under its ``type_name`` (usable as a decorator)."""
    if not cls.type_name:
        raise TypeError(f"{cls.__qualname__} has no type_name")
    with _lock:
        _registered[cls.type_name] = cls
    return cls


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_types() -> list[str]:
    """Names of every node type known, sorted."""
    return sorted(set(_registered) | set(_entry_points()))


def runtime_registrations() -> dict[str, str]:
    """``module:qualname`` of classes registered with :func:`register_node`.

    Worker processes import these so that they know the same types.
    """
    eps = _entry_points()
    with _lock:
        return {name: f"{cls.__module__}:{cls.__qualname__}" for name, cls in _registered.items()
                if name not in eps}


def import_registrations(paths: dict[str, str]) -> None:
    """Register classes by ``module:qualname`` (the inverse of :func:`runtime_registrations`)."""
    for name, path in paths.items():
        cls = _import_class(path, name)
        with _lock:
            _registered.setdefault(name, cls)


def _import_class(path: str, type_name: str) -> type[Node]:
    module_name, _, qualname = path.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UnknownNodeTypeError(
            f"node type '{type_name}': cannot import '{path}': {exc}",
            hint="write 'package.module:ClassName' with an importable module",
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, Node)):
        raise UnknownNodeTypeError(f"'{path}' is not a Node subclass")
    return obj


def get_node_class(type_name: str) -> type[Node]:
    """Return the node class registered under ``type_name``.

    Raises
    ------
    UnknownNodeTypeError
        When no node has that name; the message suggests close names.
    """
    with _lock:
        if type_name in _registered:
            return _registered[type_name]
    if ":" in type_name:  # a class named by import path
        return _import_class(type_name, type_name)
    eps = _entry_points()
    if type_name not in eps:
        known = available_types()
        close = difflib.get_close_matches(type_name, known, n=3)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise UnknownNodeTypeError(
            f"unknown node type '{type_name}'",
            hint=f"{hint}`bci nodes` lists the {len(known)} available types",
        )
    try:
        cls = eps[type_name].load()
    except Exception as exc:  # a broken plugin must not crash `bci nodes` with a traceback
        raise UnknownNodeTypeError(
            f"node type '{type_name}' ({eps[type_name].value}) failed to import: "
            f"{type(exc).__name__}: {exc}",
            hint="reinstall the package that provides it (pip install -e . for this one)",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise UnknownNodeTypeError(
            f"entry point '{type_name}' ({eps[type_name].value}) is not a Node subclass"
        )
    with _lock:
        _registered.setdefault(type_name, cls)
    return cls
