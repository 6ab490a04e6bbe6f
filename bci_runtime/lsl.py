"""LSL glue: loading pylsl, stream infos ↔ runtime specs, closing outlets safely."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from bci_runtime.errors import DependencyError
from bci_runtime.spec import StreamSpec

_FORMATS = {"float32": "float32", "float64": "double64", "string": "string"}
_FROM_LSL = {"float32": "float32", "double64": "float64", "string": "string"}


def import_pylsl() -> Any:
    """Import pylsl, with an install hint when liblsl cannot be loaded."""
    try:
        import pylsl
    except (ImportError, RuntimeError) as exc:
        raise DependencyError(
            f"pylsl (Lab Streaming Layer) cannot be loaded: {exc}",
            hint="pip install pylsl (its wheels bundle liblsl)",
        ) from exc
    return pylsl


OUTLET_LINGER_S = 0.5


def linger_for_consumers(outlets: Iterable[Any], linger_s: float = OUTLET_LINGER_S) -> None:
    """Before outlets are destroyed, let connected inlets drain (at most ``linger_s``).

    liblsl drops what is still in flight when an outlet is destroyed, and
    destroying one mid-transfer to a connected inlet can crash inside liblsl
    (sccn/liblsl#218). Returns as soon as no outlet has consumers (checked every
    50 ms). Closing is never on the data path.
    """
    live = [o for o in outlets if o is not None]
    deadline = time.monotonic() + linger_s
    while time.monotonic() < deadline and any(o.have_consumers() for o in live):
        time.sleep(0.05)


def spec_to_info(spec: StreamSpec, source_id: str | None = None) -> Any:
    """A ``pylsl.StreamInfo`` carrying the spec, with channel labels, types and units."""
    pylsl = import_pylsl()
    info = pylsl.StreamInfo(
        spec.name, spec.type, spec.n_channels, spec.srate,
        _FORMATS[spec.dtype], source_id if source_id is not None else spec.source_id,
    )
    channels = info.desc().append_child("channels")
    for label, ctype, unit in zip(spec.channel_names, spec.channel_types, spec.units):
        ch = channels.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", ctype)
        ch.append_child_value("unit", unit)
    info.desc().append_child_value("manufacturer", "bci-runtime")
    return info


def info_to_spec(info: Any) -> StreamSpec:
    """A stream spec from a full ``pylsl.StreamInfo`` (as ``inlet.info()`` returns)."""
    n = info.channel_count()
    labels, types, units = [], [], []
    ch = info.desc().child("channels").child("channel")
    for _ in range(n):
        if ch.empty():
            break
        labels.append(ch.child_value("label"))
        types.append(ch.child_value("type") or "misc")
        units.append(ch.child_value("unit") or "a.u.")
        ch = ch.next_sibling()
    if len(labels) != n or not all(labels):
        labels = [f"ch{i + 1}" for i in range(n)]
        types, units = ["misc"] * n, ["a.u."] * n
    fmt = {1: "float32", 2: "double64", 3: "string"}.get(info.channel_format(), "float32")
    dtype = _FROM_LSL.get(fmt, "float32")
    return StreamSpec(
        name=info.name(), type=info.type(), channel_names=tuple(labels),
        srate=float(info.nominal_srate()), dtype=dtype,  # type: ignore[arg-type]
        channel_types=tuple(types), units=tuple(units), source_id=info.source_id(),
    )
