"""What decoder nodes check at configure, the same way: an initial model file, a channel pick.

Both the ``coadaptive_decoder`` and the ``cursor_decoder`` nodes can start from
a model file (``initial_model``, optionally pinned by ``initial_model_sha256``)
and take their input channels by name (``channels``); the errors name the node
and the parameter, so ``bci validate`` points at the line to fix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.errors import ConfigError, ModelFileError
from bci_runtime.spec import StreamSpec

__all__ = ["InitialModel", "channel_pick", "param_error", "read_initial_model"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class InitialModel:
    """An ``initial_model`` file as the node read it.

    Attributes
    ----------
    path : Path
        The file, resolved.
    data : bytes
        Its bytes (what the session archives as version 1).
    sha256 : str
        SHA-256 hex digest of ``data``.
    model : object
        What it holds (checked by the node before use).
    """

    path: Path
    data: bytes
    sha256: str
    model: Any


def param_error(node: str, param: str, message: str, hint: str | None = None) -> ConfigError:
    """A :class:`ConfigError` that names the node and its parameter."""
    return ConfigError(f"node '{node}' parameter '{param}': {message}", hint=hint)


def read_initial_model(node: str, path_text: str, expected_sha256: str | None) -> InitialModel:
    """Read, hash and load a model file (never unpickled: :func:`load_model`).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, the expected hash is malformed or
        differs, or the file is not a model file.
    """
    from bci_runtime.decoders.model_store import load_model

    path = Path(path_text).expanduser().resolve()
    where = "initial_model"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise param_error(
            node, where, f"model file {path} does not exist",
            hint="give a file written by save_model: the wizard's, or a session's "
            "models/<node>/model-<N>.bcimodel (last_serving_version names it)") from None
    except OSError as exc:
        raise param_error(node, where, f"cannot read model file {path}: "
                          f"{exc.strerror or exc}",
                          hint="check the path and its permissions") from exc
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None:
        expected = expected_sha256.strip().lower()
        if not _SHA256.fullmatch(expected):
            raise param_error(node, "initial_model_sha256", f"{expected_sha256!r} is not a "
                              "SHA-256 hex digest", hint="64 hexadecimal characters, as "
                              "models.json records them")
        if sha256 != expected:
            raise param_error(
                node, "initial_model_sha256", f"model file {path} has SHA-256 {sha256}, but "
                f"{expected} was expected",
                hint="the file was changed or is not the one meant: restore it, or give "
                "the hash its models.json records")
    try:
        model = load_model(path, sha256=sha256)  # parses the bytes just hashed
    except ModelFileError as exc:
        raise param_error(node, where, exc.message, hint=exc.hint) from exc
    return InitialModel(path, data, sha256, model)


def channel_pick(node: str, spec: StreamSpec, names: list[str] | None) -> np.ndarray | None:
    """Input column of each of ``names``, shape (n_picked,); None to take them all as they come.

    Raises
    ------
    ConfigError
        A name given twice, missing from the input (the message lists the
        input's), or naming more than one input channel.
    """
    if names is None:
        return None
    available = list(spec.channel_names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise param_error(node, "channels", f"names {repeated} more than once",
                          hint="name each channel once")
    missing = [n for n in names if n not in available]
    if missing:
        raise param_error(
            node, "channels", f"{missing} not in input 'signal' ('{spec.name}'), whose "
            f"channels are {available}",
            hint="name channels of the input (names are case-sensitive); a channel "
            "left out upstream cannot be picked")
    ambiguous = sorted({n for n in names if available.count(n) > 1})
    if ambiguous:
        raise param_error(node, "channels", f"{ambiguous} name more than one channel of "
                          f"input 'signal' (its channels: {available})",
                          hint="give the input's channels unique names")
    index = np.array([available.index(n) for n in names], dtype=np.intp)
    if index.size == len(available) and np.array_equal(index, np.arange(index.size)):
        return None  # every channel, in order: nothing to pick
    return index
