"""A spherical head model (MNE) for realistic spatial mixing of EEG sources.

Electrodes come from the standard 10-05 montage shipped with MNE; the head is a
three-layer sphere fitted to them (``mne.make_sphere_model``); sources are
current dipoles in a discrete source space, and ``mne.make_forward_solution``
gives the gain from each dipole to each electrode. Nothing is downloaded.

A displaced cap (the ``electrode-shift`` drift) is the same montage rotated on
the sphere, so that every electrode moves by about the requested distance.
"""

from __future__ import annotations

import functools
import logging
import warnings

import numpy as np

from bci_runtime.errors import ConfigError

log = logging.getLogger(__name__)

# Channel choice for a given count: the sensorimotor strip first (motor imagery),
# then frontal (blinks) and occipital (alpha, SSVEP), then the rest of 10-20/10-10.
PRIORITY = (
    "C3", "C4", "Cz", "FC3", "FC4", "CP3", "CP4", "Fp1", "Fp2", "O1", "O2", "Oz", "Pz", "Fz",
    "FCz", "CPz", "C1", "C2", "C5", "C6", "FC1", "FC2", "CP1", "CP2", "P3", "P4", "F3", "F4",
    "T7", "T8", "F7", "F8", "P7", "P8", "POz", "PO3", "PO4", "PO7", "PO8", "AF3", "AF4", "Fpz",
    "FC5", "FC6", "CP5", "CP6", "FT7", "FT8", "TP7", "TP8", "F1", "F2", "F5", "F6", "P1", "P2",
    "P5", "P6", "AFz", "AF7", "AF8", "FT9", "FT10", "TP9", "TP10", "P9", "P10", "Iz", "F9", "F10",
)
MAX_CHANNELS = 128


@functools.lru_cache(maxsize=1)
def _montage_positions() -> dict[str, np.ndarray]:
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # 'standard_1005' is being renamed
        name = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() \
            else "standard_1005"
        montage = mne.channels.make_standard_montage(name)
    return {k: np.asarray(v, dtype=float) for k, v in montage.get_positions()["ch_pos"].items()}


def choose_channels(n: int, focus: tuple[str, ...] = PRIORITY) -> tuple[str, ...]:
    """Names of ``n`` electrodes: the ``focus`` list first, then spread over the head.

    Beyond the named list, electrodes of the 10-05 system above the ears are
    added by farthest-point sampling, so any count up to 128 covers the scalp.

    Raises
    ------
    ConfigError
        When ``n`` is outside 1..128.
    """
    if not 1 <= n <= MAX_CHANNELS:
        raise ConfigError(f"n_channels must be within 1..{MAX_CHANNELS}, got {n}",
                          hint="the simulated EEG cap has 8 to 128 electrodes")
    positions = _montage_positions()
    chosen = [c for c in dict.fromkeys(focus + PRIORITY) if c in positions][:n]
    if len(chosen) < n:
        z_min = positions["T7"][2] - 0.005
        pool = [c for c, p in positions.items() if c not in chosen and p[2] >= z_min]
        pool_pos = np.array([positions[c] for c in pool])
        picked = np.array([positions[c] for c in chosen])
        nearest = np.min(np.linalg.norm(pool_pos[:, None] - picked[None], axis=-1), axis=1)
        while len(chosen) < n:
            i = int(np.argmax(nearest))
            chosen.append(pool[i])
            nearest = np.minimum(nearest, np.linalg.norm(pool_pos - pool_pos[i], axis=1))
            nearest[i] = -1.0
    return tuple(chosen)


def electrode_positions(names: tuple[str, ...]) -> np.ndarray:
    """Head-frame positions of electrodes (m), shape (n_channels, 3).

    Raises
    ------
    ConfigError
        For a name that is not in the 10-05 system.
    """
    positions = _montage_positions()
    unknown = [n for n in names if n not in positions]
    if unknown:
        raise ConfigError(f"unknown electrode name(s): {', '.join(unknown)}",
                          hint="use 10-20/10-10/10-05 names such as C3, Cz, FC4, POz")
    return np.array([positions[n] for n in names])


class HeadModel:
    """A sphere head model for a set of electrodes.

    Parameters
    ----------
    channel_names : tuple of str
        Electrodes (10-05 names).

    Attributes
    ----------
    center : ndarray, shape (3,)
        Center of the fitted sphere (m, head frame).
    radius : float
        Radius of the head (m).
    """

    def __init__(self, channel_names: tuple[str, ...]) -> None:
        self.channel_names = tuple(channel_names)
        self.positions = electrode_positions(self.channel_names)
        # fit the sphere on the whole montage, so that it is the same head for any subset
        every = np.array(list(_montage_positions().values()))
        every = every[every[:, 2] >= self.positions.min(initial=0.0, axis=0)[2] - 0.05]
        self.center, self.radius = _fit_sphere(every)

    def point_under(self, electrode: str, depth: float = 0.25) -> np.ndarray:
        """A point below an electrode, ``depth`` of the way to the center, shape (3,)."""
        p = electrode_positions((electrode,))[0]
        return self.center + (1.0 - depth) * (p - self.center)

    def radial(self, points: np.ndarray) -> np.ndarray:
        """Unit vectors from the center through ``points`` (n, 3) → (n, 3)."""
        d = points - self.center
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def gain(self, dipoles: np.ndarray, orientations: np.ndarray,
             shift_mm: float = 0.0, shift_seed: int = 0) -> np.ndarray:
        """Gain from each dipole to each electrode (V per A·m).

        Parameters
        ----------
        dipoles : ndarray, shape (n_sources, 3)
            Dipole positions (m, head frame), inside the head.
        orientations : ndarray, shape (n_sources, 3)
            Unit dipole orientations.
        shift_mm : float
            Move the cap by this much (a rotation on the sphere about a random
            horizontal axis drawn from ``shift_seed``).

        Returns
        -------
        ndarray, shape (n_channels, n_sources)
        """
        positions = self.positions
        if shift_mm:
            positions = self._rotated(positions, shift_mm, shift_seed)
        return _forward(tuple(self.channel_names), positions.tobytes(), self.center.tobytes(),
                        self.radius, dipoles.tobytes(), orientations.tobytes())

    def _rotated(self, positions: np.ndarray, shift_mm: float, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        phi = rng.uniform(0, 2 * np.pi)
        axis = np.array([np.cos(phi), np.sin(phi), 0.0])
        angle = (shift_mm / 1000.0) / self.radius
        # Rodrigues' rotation about an axis through the sphere's center
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
        return self.center + (positions - self.center) @ rot.T


def _fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``points`` (n, 3): (center (3,), radius)."""
    a = np.c_[2 * points, np.ones(len(points))]
    b = (points ** 2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    center = sol[:3]
    return center, float(np.sqrt(sol[3] + center @ center))


@functools.lru_cache(maxsize=32)
def _forward(names: tuple[str, ...], positions: bytes, center: bytes, radius: float,
             dipoles: bytes, orientations: bytes) -> np.ndarray:
    import mne

    pos = np.frombuffer(positions).reshape(-1, 3)
    rr = np.frombuffer(dipoles).reshape(-1, 3)
    nn = np.frombuffer(orientations).reshape(-1, 3)
    r0 = np.frombuffer(center)
    montage = mne.channels.make_dig_montage(ch_pos=dict(zip(names, pos)), coord_frame="head")
    info = mne.create_info(list(names), 1000.0, "eeg")
    info.set_montage(montage, verbose=False)
    sphere = mne.make_sphere_model(r0=r0, head_radius=radius, verbose=False)
    src = mne.setup_volume_source_space(pos={"rr": rr, "nn": nn}, sphere=sphere, verbose=False)
    if len(src[0]["vertno"]) != len(rr):
        raise ConfigError("a simulated dipole lies outside the head model",
                          hint="place sources deeper (depth between 0.15 and 0.6)")
    fwd = mne.make_forward_solution(info, trans=None, src=src, bem=sphere, eeg=True, meg=False,
                                    verbose=False)
    free = fwd["sol"]["data"].reshape(len(names), len(rr), 3)  # x, y, z per dipole
    return np.einsum("cdk,dk->cd", free, nn)
