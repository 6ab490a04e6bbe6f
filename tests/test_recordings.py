"""Loading recordings for file replay: real files from ../shared/data, and damaged copies.

Every damaged input is built in ``tmp_path`` from a real recording (cut, overwritten
or replaced by pointer text); nothing is copied into the repository.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest
import pyxdf

from bci_runtime.drivers.recordings import load_recording
from bci_runtime.errors import ConfigError, RecordingError
from bci_runtime.xdf_writer import XdfWriter

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"
EDF = "physionet_eegmmidb/S001/S001R04.edf"
KALUNGA = "ssvep_exo_kalunga2016/subject01/record-[2012.07.06-19.02.16]_raw.fif"
XDF_3CLASS = "xdf/labrecorder_openbci_3class.xdf"
XDF_DROPOUTS = "xdf/labrecorder_openbci_dropouts.xdf"
ECOG_FIF = "ecog/sample_ecog_ieeg.fif"
PERSYST = "ecog/sub-pt1_ses-02_task-monitor_acq-ecog_run-01_clip2.lay"
# S001R04, one 1-s record: 64 EEG signals of 160 samples + an annotation signal of 80
EDF_RECORD_BYTES = (64 * 160 + 80) * 2
EDF_HEADER_BYTES = 256 * 66


def real(relative: str) -> Path:
    """Path of a real recording; skip the test when the shared data are not there."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"real recordings not found at {DATA} (needs ../shared/data/{relative})")
    return path


def marker_values(stream) -> list[str]:
    return [str(v) for v in stream.data[:, 0]]


def xdf_chunks(blob: bytes) -> list[tuple[int, int, int, int | None]]:
    """(start, end, tag, stream id) of every chunk of an XDF file."""
    chunks, pos = [], 4
    while pos < len(blob):
        nbytes = blob[pos]
        length = int.from_bytes(blob[pos + 1:pos + 1 + nbytes], "little")
        body = pos + 1 + nbytes
        tag = int.from_bytes(blob[body:body + 2], "little")
        sid = int.from_bytes(blob[body + 2:body + 6], "little") if tag in (2, 3, 4, 6) else None
        chunks.append((pos, body + length, tag, sid))
        pos = body + length
    return chunks


@pytest.fixture(scope="module")
def xdf_full():
    """The intact 3-class XDF, loaded once: path, raw bytes, Recording."""
    path = real(XDF_3CLASS)
    return path, path.read_bytes(), load_recording(path)


# ------------------------------------------------------------------ real recordings
def test_physionet_edf_signal_and_annotations() -> None:
    path = real(EDF)
    rec = load_recording(path)
    assert rec.format == "edf" and rec.warnings == []
    assert [s.spec.name for s in rec.streams] == ["S001R04", "S001R04-markers"]
    eeg, = rec.signals()
    assert eeg.data.shape == (20000, 64) and eeg.data.dtype == np.float64
    assert eeg.data.flags.c_contiguous
    assert eeg.spec.type == "EEG" and eeg.spec.srate == 160.0 and eeg.spec.dtype == "float64"
    assert set(eeg.spec.channel_types) == {"eeg"} and set(eeg.spec.units) == {"V"}
    assert eeg.spec.source_id == "file:S001R04.edf"
    assert eeg.duration_s == pytest.approx(125.0) and rec.start == 0.0
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    np.testing.assert_array_equal(eeg.data, raw.get_data().T)
    markers, = rec.markers()
    assert markers.spec.type == "Markers" and markers.spec.dtype == "string"
    assert markers.spec.channel_names == ("marker",) and markers.spec.srate == 0
    values = marker_values(markers)
    assert {v: values.count(v) for v in set(values)} == {"T0": 15, "T1": 8, "T2": 7}
    events, ids = mne.events_from_annotations(raw, verbose="error")
    np.testing.assert_array_equal(np.round(markers.timestamps * 160).astype(int), events[:, 0])
    assert [ids[v] for v in values] == list(events[:, 2])


@pytest.mark.parametrize("meas_date", ["kept", None])
def test_annotations_share_the_signal_clock_when_first_samp_is_not_zero(
        tmp_path: Path, meas_date: str | None) -> None:
    raw = mne.io.read_raw_edf(real(EDF), preload=True, verbose="error")
    if meas_date is None:
        raw.set_meas_date(None)
    raw.crop(tmin=10.3, tmax=60.0)
    raw.save(tmp_path / "cropped_raw.fif", verbose="error")
    raw = mne.io.read_raw_fif(tmp_path / "cropped_raw.fif", preload=True, verbose="error")
    assert raw.first_samp > 0
    rec = load_recording(tmp_path / "cropped_raw.fif")
    eeg, markers = rec.streams
    assert eeg.timestamps[0] == pytest.approx(raw.first_samp / 160)
    np.testing.assert_allclose(eeg.timestamps, raw.times + raw.first_time, atol=1e-9)
    events, ids = mne.events_from_annotations(raw, verbose="error")
    np.testing.assert_array_equal(np.round(markers.timestamps * 160).astype(int), events[:, 0])
    # the signal sample nearest to each marker is the annotation's sample
    nearest = np.abs(markers.timestamps[:, None] - eeg.timestamps[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(nearest + raw.first_samp, events[:, 0])


def test_kalunga_fif_takes_its_events_file(tmp_path: Path) -> None:
    path = real(KALUNGA)
    events_file = path.with_name(path.name.replace("_raw.fif", "-eve.fif"))
    rec = load_recording(path)
    assert rec.format == "fif" and rec.warnings == []
    eeg, = rec.signals()
    assert eeg.data.shape[1] == 8 and eeg.spec.srate == 256.0
    assert eeg.spec.channel_names == ("Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4")
    markers = rec.stream("record-[2012.07.06-19.02.16]_raw-markers")
    values = marker_values(markers)
    assert {v: values.count(v) for v in set(values)} == {"1": 8, "2": 8, "3": 8, "4": 8}
    events = mne.read_events(events_file)
    np.testing.assert_array_equal(np.round(markers.timestamps * 256).astype(int), events[:, 0])
    assert values == [str(c) for c in events[:, 2]]
    # other spellings: X_raw-eve.fif beside, or an explicit events file anywhere
    shutil.copy(path, tmp_path / "session_raw.fif")
    shutil.copy(events_file, tmp_path / "session_raw-eve.fif")
    assert marker_values(load_recording(tmp_path / "session_raw.fif").markers()[0]) == values
    os.rename(tmp_path / "session_raw-eve.fif", tmp_path / "elsewhere.fif")
    assert load_recording(tmp_path / "session_raw.fif").markers() == []
    explicit = load_recording(tmp_path / "session_raw.fif", events_file=tmp_path / "elsewhere.fif")
    assert marker_values(explicit.markers()[0]) == values
    with pytest.raises(RecordingError, match="events file .*nope-eve.fif' not found"):
        load_recording(tmp_path / "session_raw.fif", events_file=tmp_path / "nope-eve.fif")


def test_every_kalunga_session_has_8_trials_per_class() -> None:
    sessions = sorted(real("ssvep_exo_kalunga2016").glob("subject*/*_raw.fif"))
    assert len(sessions) == 12
    for path in sessions:
        rec = load_recording(path)
        eeg, markers = rec.streams
        assert eeg.data.shape[1] == 8 and eeg.spec.srate == 256.0, path
        values = marker_values(markers)
        assert sorted(values) == sorted(["1", "2", "3", "4"] * 8), path
        assert eeg.timestamps[0] <= markers.timestamps[0] <= markers.timestamps[-1] \
            <= eeg.timestamps[-1], path


def test_stim_channel_events_merge_with_the_events_file(tmp_path: Path) -> None:
    path = real(KALUNGA)
    events = mne.read_events(path.with_name(path.name.replace("_raw.fif", "-eve.fif")))
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    stim = mne.io.RawArray(np.zeros((1, raw.n_times)),
                           mne.create_info(["STI"], raw.info["sfreq"], "stim"), verbose="error")
    raw.add_channels([stim], force_update_info=True)
    raw.add_events(events, stim_channel="STI")
    raw.save(tmp_path / "stim_raw.fif", verbose="error")
    mne.write_events(tmp_path / "stim-eve.fif", events, verbose="error")
    rec = load_recording(tmp_path / "stim_raw.fif")
    eeg, markers = rec.streams
    assert "STI" not in eeg.spec.channel_names and eeg.data.shape[1] == 8
    assert marker_values(markers) == [str(c) for c in events[:, 2]]
    assert rec.warnings == ["32 events are both in the stim channels and in the events file; "
                            "each was kept once"]


def test_xdf_3class_streams(xdf_full) -> None:
    path, _, rec = xdf_full
    assert rec.format == "xdf"
    assert [s.spec.name for s in rec.streams] == ["obci_eeg1", "MarkerStream"]
    eeg = rec.stream("obci_eeg1")
    assert eeg.data.shape == (53600, 16) and eeg.data.dtype == np.float32
    assert eeg.spec.dtype == "float32" and eeg.spec.srate == 125.0 and eeg.spec.type == "EEG"
    assert eeg.spec.channel_names[:2] == ("ch1", "ch2") and eeg.spec.source_id == "openbcigui"
    markers = rec.stream("MarkerStream")
    assert markers.spec.type == "Markers" and markers.data.shape == (182, 1)
    assert markers.spec.source_id == "myuniquesourceid23443"
    # this rig sends its cue codes as formatted floats ("1.000000000000000"); kept as recorded
    codes = [float(v) for v in marker_values(markers)]
    assert [codes.count(c) for c in (1, 2, 3)] == [20, 20, 20]
    streams, _ = pyxdf.load_xdf(path, synchronize_clocks=True, dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    np.testing.assert_array_equal(eeg.timestamps, by_name["obci_eeg1"]["time_stamps"])
    np.testing.assert_array_equal(eeg.data, by_name["obci_eeg1"]["time_series"])
    assert rec.start == pytest.approx(eeg.timestamps[0])
    # real jitter: OpenBCI's chunk timestamps overlap
    assert rec.warnings == ["stream 'obci_eeg1': timestamps go backwards 1115 times (by up to "
                            "17.8 ms: jittery chunk timestamps?); samples are kept in file "
                            "order"]


def test_xdf_dropouts_warns_about_the_effective_rate() -> None:
    rec = load_recording(real(XDF_DROPOUTS))
    eeg = rec.stream("obci_eeg1")
    assert eeg.data.shape == (45465, 16)
    rate, = [w for w in rec.warnings if "effective sampling rate" in w]
    assert "50.07 Hz differs from the nominal 125 Hz" in rate and "dropouts" in rate
    values = marker_values(rec.stream("MarkerStream"))
    assert {v: values.count(v) for v in set(values)} == {"111": 120, "999": 120, "1111": 1,
                                                         "9999": 1}


def test_ecog_fif_mixing_ecog_and_seeg_is_an_ecog_stream() -> None:
    rec = load_recording(real(ECOG_FIF))
    assert rec.markers() == [] and rec.warnings == []
    ieeg, = rec.streams
    assert ieeg.spec.type == "ECoG" and ieeg.data.shape == (113, 394)
    types = ieeg.spec.channel_types
    assert (types.count("ecog"), types.count("seeg")) == (320, 74)
    assert set(ieeg.spec.units) == {"V"}


def test_persyst_lay(capsys: pytest.CaptureFixture[str]) -> None:
    rec = load_recording(real(PERSYST))
    assert rec.format == "persyst" and rec.warnings == []
    eeg, markers = rec.streams
    assert eeg.data.shape == (847, 83) and eeg.spec.srate == 200.0
    assert marker_values(markers) == ["seizure", "CLip2", "seizure", "seizure1,2", "Clip1"]
    np.testing.assert_allclose(markers.timestamps, [0, 0, 1, 1, 3.73])
    assert capsys.readouterr().out == ""  # MNE's Persyst reader prints; kept off stdout


# ------------------------------------------------------------------ bad paths
def test_lfs_pointer_says_what_and_how_to_fetch(tmp_path: Path) -> None:
    source = real(EDF)
    oid = hashlib.sha256(source.read_bytes()).hexdigest()
    pointer = tmp_path / "S001R04.edf"
    pointer.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\n"
                       f"size {source.stat().st_size}\n")
    with pytest.raises(RecordingError) as caught:
        load_recording(pointer)
    text = str(caught.value)
    assert "is a Git-LFS pointer" in text and f"oid sha256:{oid}" in text
    assert "size 2,596,896 bytes" in text and "git lfs pull" in text


def test_git_annex_link_without_content(tmp_path: Path) -> None:
    link = tmp_path / "run.edf"
    link.symlink_to(".git/annex/objects/Xz/Q1/SHA256E-s2596896--ab12.edf/SHA256E-s2596896--"
                    "ab12.edf")
    with pytest.raises(RecordingError, match=r"git-annex link(.|\n)*git annex get"):
        load_recording(link)


def test_missing_file_lists_the_recordings_there(tmp_path: Path) -> None:
    (tmp_path / "a.xdf").write_bytes(b"XDF:")
    with pytest.raises(RecordingError, match=r"'.*b\.edf' not found\n  hint: .*: a\.xdf"):
        load_recording(tmp_path / "b.edf")


def test_empty_file_directory_and_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "empty.fif").write_bytes(b"")
    with pytest.raises(RecordingError, match=r"is empty \(0 bytes\)(.|\n)*get the file again"):
        load_recording(tmp_path / "empty.fif")
    (tmp_path / "session").mkdir()
    (tmp_path / "session" / "run1.xdf").write_bytes(b"XDF:")
    with pytest.raises(RecordingError, match=r"is a folder(.|\n)*recordings in it: run1\.xdf"):
        load_recording(tmp_path / "session")
    (tmp_path / "notes.csv").write_text("t,x\n0,1\n")
    with pytest.raises(RecordingError) as caught:
        load_recording(tmp_path / "notes.csv")
    assert "extension that cannot be read ('.csv')" in str(caught.value)
    assert ".xdf" in caught.value.hint and ".edf" in caught.value.hint


def test_persyst_header_without_its_data_file(tmp_path: Path) -> None:
    shutil.copy(real(PERSYST), tmp_path / "clip.lay")
    with pytest.raises(RecordingError) as caught:
        load_recording(tmp_path / "clip.lay")
    assert "needs its data file" in str(caught.value) and ".dat', which is missing" in str(
        caught.value)
    assert "next to 'clip.lay'" in caught.value.hint


def test_persyst_data_file_points_to_its_header() -> None:
    data_file = real(PERSYST).with_suffix(".dat")
    with pytest.raises(RecordingError, match=r"is the data file of '.*clip2\.lay'(.|\n)*hint: "
                                             r"load '.*clip2\.lay' instead"):
        load_recording(data_file)


def test_events_file_is_for_mne_formats_only(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"events_file .* XDF file(.|\n)*drop events_file"):
        load_recording(real(XDF_3CLASS), events_file=tmp_path / "x-eve.fif")


# ------------------------------------------------------------------ damaged EDF
def test_edf_cut_in_the_middle_of_a_record(tmp_path: Path) -> None:
    source = real(EDF)
    cut = tmp_path / "cut.edf"
    cut.write_bytes(source.read_bytes()[:EDF_HEADER_BYTES + 60 * EDF_RECORD_BYTES + 5000])
    rec = load_recording(cut)
    warning, = rec.warnings
    assert "shorter than its header says" in warning
    assert "125 records (125 s) declared, 60 records (60 s) present" in warning
    assert "65 records (65 s) are lost" in warning
    assert "last 5000 bytes (part of record 61) were dropped" in warning
    eeg, markers = rec.streams
    full = mne.io.read_raw_edf(source, preload=True, verbose="error").get_data().T
    np.testing.assert_array_equal(eeg.data, full[:9600])
    assert len(markers.timestamps) == 15 and markers.timestamps.max() < 60


def test_edf_header_declares_more_records_than_present(tmp_path: Path) -> None:
    blob = bytearray(real(EDF).read_bytes())
    blob[236:244] = b"200     "
    (tmp_path / "more.edf").write_bytes(blob)
    rec = load_recording(tmp_path / "more.edf")
    warning, = rec.warnings
    assert "200 records (200 s) declared, 125 records (125 s) present" in warning
    assert "75 records (75 s) are lost" in warning
    assert rec.signals()[0].data.shape == (20000, 64)


@pytest.mark.parametrize("damage, expected", [
    ("longer", "has 20657 bytes after the 125 records (125 s) its header declares; loaded the "
               "declared records only"),
    ("unknown", "does not give the number of data records (-1: the recorder did not close the "
                "file); loaded the 125 records (125 s) present"),
])
def test_edf_longer_than_declared_or_without_record_count(
        tmp_path: Path, damage: str, expected: str) -> None:
    blob = bytearray(real(EDF).read_bytes())
    if damage == "longer":
        blob += bytes(EDF_RECORD_BYTES + 17)
    else:
        blob[236:244] = b"-1      "
    (tmp_path / "odd.edf").write_bytes(blob)
    rec = load_recording(tmp_path / "odd.edf")
    warning, = rec.warnings
    assert expected in warning
    assert rec.signals()[0].data.shape == (20000, 64)


def test_garbage_with_edf_extension(tmp_path: Path) -> None:
    garbage = tmp_path / "noise.edf"
    garbage.write_bytes(np.random.default_rng(7).bytes(4000))
    with pytest.raises(RecordingError) as caught:
        load_recording(garbage)
    assert "is not a readable EDF file: it starts with" in str(caught.value)
    assert "get an intact copy" in caught.value.hint


# ------------------------------------------------------------------ damaged XDF
def test_xdf_cut_mid_chunk(tmp_path: Path, xdf_full) -> None:
    _, blob, full = xdf_full
    samples = [c for c in xdf_chunks(blob) if c[2] == 3 and c[3] == 2]
    start, end, _, _ = samples[len(samples) // 2]
    cut_at = (start + end) // 2
    (tmp_path / "crash.xdf").write_bytes(blob[:cut_at])
    rec = load_recording(tmp_path / "crash.xdf")
    cut_warning, = [w for w in rec.warnings if "mid-chunk" in w]
    assert cut_warning == (
        f"file ends mid-chunk at byte {cut_at} (recording cut short?): the incomplete last "
        f"chunk (from byte {start}, {cut_at - start} bytes) was dropped; footers missing for "
        "streams 'MarkerStream', 'obci_eeg1'")
    for stream in rec.streams:
        whole = full.stream(stream.spec.name)
        assert 0 < stream.n_samples < whole.n_samples
        np.testing.assert_array_equal(stream.data, whole.data[:stream.n_samples])


def test_xdf_cut_inside_the_stream_headers_has_nothing_to_replay(tmp_path: Path,
                                                                  xdf_full) -> None:
    _, blob, _ = xdf_full
    (tmp_path / "early.xdf").write_bytes(blob[:700])
    with pytest.raises(RecordingError, match=r"holds no samples in any stream \(file ends "
                                             r"mid-chunk at byte 700"):
        load_recording(tmp_path / "early.xdf")


@pytest.mark.parametrize("damage", ["length", "tag"])
def test_xdf_corrupted_chunk_is_skipped(tmp_path: Path, xdf_full, damage: str) -> None:
    _, blob, full = xdf_full
    samples = [c for c in xdf_chunks(blob) if c[2] == 3 and c[3] == 2]
    start, end, _, _ = samples[len(samples) // 2]
    body = start + 1 + blob[start]  # where the chunk's tag starts
    count_at = body + 6  # the chunk's sample count: 0x04 + uint32
    in_chunk = int.from_bytes(blob[count_at + 1:count_at + 5], "little")
    broken = bytearray(blob)
    if damage == "length":
        broken[start] = 0x07  # not a valid length prefix (1, 4 or 8): resync at a boundary
    else:
        broken[body:body + 2] = b"\xff\x7f"  # unknown tag, length intact: that chunk only
    (tmp_path / "corrupt.xdf").write_bytes(broken)
    rec = load_recording(tmp_path / "corrupt.xdf")
    skipped, = [w for w in rec.warnings if "corrupted" in w]
    eeg, whole = rec.stream("obci_eeg1"), full.stream("obci_eeg1")
    lost = whole.n_samples - eeg.n_samples
    if damage == "length":
        assert skipped.startswith(f"chunk at byte {start} is corrupted (invalid length prefix 7)"
                                  "; skipped ")
        assert "to the next boundary chunk (byte" in skipped and "in between are lost" in skipped
        assert in_chunk < lost < 2000
    else:
        assert skipped == (f"chunk at byte {start} is corrupted (tag 32767, length "
                           f"{end - body}); skipped that chunk alone ({end - start} bytes)")
        assert lost == in_chunk
    # what is left is the recording with one contiguous block taken out
    first_bad = int(np.argmax(np.any(eeg.data != whole.data[:eeg.n_samples], axis=1)))
    np.testing.assert_array_equal(eeg.data[:first_bad], whole.data[:first_bad])
    np.testing.assert_array_equal(eeg.data[first_bad:], whole.data[first_bad + lost:])


def test_xdf_stream_header_damaged_drops_that_stream(tmp_path: Path, xdf_full) -> None:
    _, blob, full = xdf_full
    header = blob.index(b"<name>obci_eeg1</name>")
    broken = bytearray(blob)
    broken[header:header + 6] = b"<nam>>"  # XML no longer well-formed
    (tmp_path / "header.xdf").write_bytes(broken)
    rec = load_recording(tmp_path / "header.xdf")
    assert [s.spec.name for s in rec.streams] == ["MarkerStream"]
    assert "is corrupted (unreadable stream header" in rec.warnings[0]
    assert rec.warnings[1].endswith("chunks of stream ids [2] were dropped: their stream "
                                    "header is missing (lost to corruption?)")
    markers = rec.stream("MarkerStream")
    assert 0 < markers.n_samples <= full.stream("MarkerStream").n_samples


def test_compressed_xdf(tmp_path: Path, xdf_full) -> None:
    _, blob, full = xdf_full
    with gzip.open(tmp_path / "session.xdf.gz", "wb", compresslevel=1) as f:
        f.write(blob)
    rec = load_recording(tmp_path / "session.xdf.gz")
    assert rec.format == "xdf" and rec.warnings == full.warnings
    np.testing.assert_array_equal(rec.stream("obci_eeg1").data, full.stream("obci_eeg1").data)
    compressed = (tmp_path / "session.xdf.gz").read_bytes()
    (tmp_path / "cut.xdfz").write_bytes(compressed[:len(compressed) // 2])
    rec = load_recording(tmp_path / "cut.xdfz")
    assert rec.warnings[0].startswith("cut.xdfz: the compressed data end early or are damaged "
                                      "after ")
    assert rec.warnings[1].startswith("file ends mid-chunk at byte ")
    assert rec.warnings[1].endswith("(byte offsets in the decompressed data)")
    eeg = rec.stream("obci_eeg1")
    assert 0 < eeg.n_samples < full.stream("obci_eeg1").n_samples
    np.testing.assert_array_equal(eeg.data, full.stream("obci_eeg1").data[:eeg.n_samples])


def test_not_xdf_bytes_with_xdf_extension(tmp_path: Path) -> None:
    (tmp_path / "fake.xdf").write_bytes(real(EDF).read_bytes()[:5000])
    with pytest.raises(RecordingError, match=r"is not an XDF file: it starts with b'0   ', "
                                             r"not b'XDF:'"):
        load_recording(tmp_path / "fake.xdf")


def test_nan_values_are_kept_and_counted_and_empty_streams_left_out(tmp_path: Path,
                                                                      xdf_full) -> None:
    _, _, full = xdf_full
    eeg = full.stream("obci_eeg1")
    data = eeg.data[:1000].copy()
    data[10:15, 3] = np.nan
    data[500, 7] = np.inf
    path = tmp_path / "nan.xdf"
    with XdfWriter(path) as writer:
        sid = writer.add_stream(name="eeg", type="EEG", channel_count=16, srate=125.0,
                                channel_format="float32", source_id="test-nan",
                                channel_labels=[f"E{i}" for i in range(16)],
                                channel_units="microvolts")
        writer.add_stream(name="silent", type="Markers", channel_count=1, srate=0,
                          channel_format="string")
        writer.write_samples(sid, data, np.arange(1000) / 125.0)
        for t in (0.0, 4.0, 8.0):
            writer.write_clock_offset(sid, t, 0.0)
    rec = load_recording(path)
    assert [s.spec.name for s in rec.streams] == ["eeg"]
    got = rec.stream("eeg")
    assert got.spec.channel_names[3] == "E3" and set(got.spec.units) == {"uV"}
    np.testing.assert_array_equal(got.data, data)  # NaN/Inf kept, in place
    assert rec.warnings == [
        "streams without samples were left out: 'silent'",
        "stream 'eeg' holds 6 non-finite values (5 NaN, 1 Inf) in 2 channels: E3 (5), E7 (1); "
        "kept as recorded (the runtime's chunk checks handle them downstream)",
    ]


def test_unknown_stream_name_lists_the_streams(xdf_full) -> None:
    _, _, rec = xdf_full
    with pytest.raises(ConfigError, match=r"no stream 'EEG'\n  hint: its streams are: "
                                          r"'obci_eeg1', 'MarkerStream'"):
        rec.stream("EEG")
