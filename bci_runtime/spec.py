"""Stream specifications: what a stream carries, fixed when the graph starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from bci_runtime.errors import SpecMismatchError

SIGNAL_DTYPES = ("float32", "float64")
EVENT_DTYPE = "string"
Dtype = Literal["float32", "float64", "string"]


@dataclass(frozen=True)
class StreamSpec:
    """Description of one stream, as LSL describes a stream.

    Parameters
    ----------
    name : str
        Stream name.
    type : str
        Content type (``EEG``, ``ECoG``, ``Markers``, ``Features``, ``Decision``...).
    channel_names : tuple of str, shape (n_channels,)
        Channel labels.
    srate : float
        Nominal sampling rate in Hz; 0 for irregular streams (events, decisions).
    dtype : {"float32", "float64", "string"}
        Sample format; ``string`` marks an event stream.
    channel_types : tuple of str, shape (n_channels,), optional
        Channel types (``eeg``, ``ecog``, ``misc``...); default ``misc`` for each.
    units : tuple of str, shape (n_channels,), optional
        Channel units (``V``, ``uV``, ``a.u.``...); default ``a.u.`` for each.
    source_id : str
        Unique id of the producing device or node.
    """

    name: str
    type: str
    channel_names: tuple[str, ...]
    srate: float
    dtype: Dtype = "float64"
    channel_types: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    source_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        n = len(self.channel_names)
        if n == 0:
            raise SpecMismatchError(f"stream '{self.name}' has no channels")
        if self.dtype not in (*SIGNAL_DTYPES, EVENT_DTYPE):
            raise SpecMismatchError(
                f"stream '{self.name}' has dtype '{self.dtype}'",
                hint=f"use one of {', '.join((*SIGNAL_DTYPES, EVENT_DTYPE))}",
            )
        if self.srate < 0:
            raise SpecMismatchError(f"stream '{self.name}' has a negative rate {self.srate}")
        object.__setattr__(self, "channel_names", tuple(self.channel_names))
        object.__setattr__(
            self, "channel_types", tuple(self.channel_types) or ("misc",) * n
        )
        object.__setattr__(self, "units", tuple(self.units) or ("a.u.",) * n)
        for label, values in (("channel_types", self.channel_types), ("units", self.units)):
            if len(values) != n:
                raise SpecMismatchError(
                    f"stream '{self.name}' has {n} channels but {len(values)} {label}"
                )

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.channel_names)

    @property
    def is_events(self) -> bool:
        """True for event (string marker) streams."""
        return self.dtype == EVENT_DTYPE

    def with_changes(self, **changes: Any) -> StreamSpec:
        """Return a copy with some fields replaced."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping (inverse of :meth:`from_dict`)."""
        out = asdict(self)
        for key in ("channel_names", "channel_types", "units"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamSpec:
        """Build a spec from :meth:`to_dict` output."""
        return cls(**data)

    @classmethod
    def events(cls, name: str, source_id: str = "") -> StreamSpec:
        """Spec of a one-channel string marker stream."""
        return cls(
            name=name,
            type="Markers",
            channel_names=("marker",),
            srate=0.0,
            dtype=EVENT_DTYPE,
            channel_types=("stim",),
            units=("",),
            source_id=source_id,
        )


def require_signal(spec: StreamSpec, *, node: str, port: str) -> None:
    """Raise :class:`SpecMismatchError` unless ``spec`` is a numeric signal."""
    if spec.is_events:
        raise SpecMismatchError(
            f"node '{node}' port '{port}' needs a numeric signal but got event stream "
            f"'{spec.name}'",
            hint="connect a signal output to this port",
        )


def require_regular(spec: StreamSpec, *, node: str, port: str) -> None:
    """Raise :class:`SpecMismatchError` unless ``spec`` has a nominal rate."""
    require_signal(spec, node=node, port=port)
    if spec.srate <= 0:
        raise SpecMismatchError(
            f"node '{node}' port '{port}' needs a regularly sampled stream but "
            f"'{spec.name}' has no nominal rate",
            hint="feed it a stream with a fixed sampling rate",
        )
