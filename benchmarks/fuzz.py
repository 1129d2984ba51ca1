#!/usr/bin/env python
"""Fuzzes every decode path with Hypothesis: the image reader, DICOM, whole scans and the app's handler.

    python benchmarks/fuzz.py [--model model] [--examples 10000] [--seed 0]

Inputs start from valid files (JPEG, PNG, TIFF, GIF, BMP, WebP and DICOM; odd modes and bit depths,
extreme sizes, several frames, a decompression bomb, a zero-byte file; NIfTI volumes, 4-D and oversized
ones; zips of DICOM series, mixed, escaping or bombs) and are mutated: truncated,
bytes flipped, inserted or deleted, headers overwritten. Each one is written under a random file name
and given to the app's `analyse` handler (which reads it, explains it and writes its report).
The only acceptable outcomes are a result or one clear message (ValueError / gr.Error) that names no
server path; anything else, anything over 2 s, or memory growth is reported.
"""
import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

EXTENSIONS = (".jpg", ".png", ".tif", ".gif", ".bmp", ".webp", ".dcm", ".nii", ".nii.gz", ".zip")
SCAN_INPUT = (".dcm", ".nii", ".nii.gz", ".zip")  # what the page's file input takes (the rest: its image input)


def dicom_bytes(rows: int, cols: int, frames: int = 1, bits: int = 16, pixels: bytes | None = None,
                position: float | None = None, series: str = "1.2.3") -> bytes:
    """A minimal MR DICOM file; ``pixels`` may disagree with the declared size on purpose; ``position``
    places it in an axial series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.Modality, ds.PhotometricInterpretation = MRImageStorage, "MR", "MONOCHROME2"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if position is not None:
        ds.SeriesInstanceUID, ds.ImageOrientationPatient, ds.ImagePositionPatient = series, [1, 0, 0, 0, 1, 0], [0, 0, position]
    rng = np.random.default_rng(rows * cols)
    dtype = np.uint16 if bits == 16 else np.uint8
    ds.PixelData = pixels if pixels is not None else rng.integers(0, 4000, (frames, rows, cols)).astype(dtype).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _encode(image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def seed_files() -> list:
    """(extension, bytes) of valid or borderline files of every kind we read."""
    from PIL import Image

    rng = np.random.default_rng(0)
    head = np.zeros((64, 64), np.uint8)
    head[12:52, 10:54] = rng.integers(60, 200, (40, 44))
    grey, rgb = Image.fromarray(head), Image.fromarray(np.dstack([head] * 3))
    seeds = [(".jpg", _encode(grey, "JPEG")), (".jpg", _encode(rgb, "JPEG", quality=50)),
             (".jpg", _encode(rgb.convert("CMYK"), "JPEG")), (".png", _encode(grey, "PNG")),
             (".png", _encode(rgb.convert("RGBA"), "PNG")), (".png", _encode(grey.convert("1"), "PNG")),
             (".png", _encode(rgb.convert("P"), "PNG")), (".png", _encode(grey.convert("LA"), "PNG")),
             (".png", _encode(Image.fromarray(head.astype(np.uint16) * 250), "PNG")),
             (".png", _encode(Image.new("L", (1, 1)), "PNG")), (".png", _encode(Image.new("L", (4000, 1)), "PNG")),
             (".png", _encode(Image.new("L", (1, 4000)), "PNG")), (".gif", _encode(Image.new("L", (20000, 100)), "GIF")),
             (".png", _encode(Image.new("L", (20000, 20000)), "PNG", optimize=True)),  # a decompression bomb
             (".tif", _encode(Image.fromarray(head.astype(np.float32) / 7), "TIFF")),
             (".tif", _encode(Image.fromarray(head.astype(np.int32) - 100), "TIFF")),
             (".tif", _encode(grey, "TIFF", save_all=True, append_images=[rgb.convert("L")] * 2)),
             (".gif", _encode(grey, "GIF", save_all=True, append_images=[grey.rotate(90)], loop=0)),
             (".bmp", _encode(rgb, "BMP")), (".webp", _encode(rgb, "WEBP")), (".png", b""),
             (".dcm", dicom_bytes(64, 64)), (".dcm", dicom_bytes(48, 40, bits=8)), (".dcm", dicom_bytes(32, 32, frames=3)),
             (".dcm", dicom_bytes(60000, 60000, pixels=b"\0" * 64)), (".dcm", dicom_bytes(64, 64, pixels=b"\1" * 100))]
    from pydicom import examples

    for name in ("ct", "mr", "rgb_color", "jpeg2k", "palette_color", "ybr_color"):
        try:
            seeds.append((".dcm", Path(examples.get_path(name)).read_bytes()))
        except Exception:  # an example this pydicom lacks
            continue
    return seeds + scan_seeds(head)


def scan_seeds(head: np.ndarray) -> list:
    """Whole scans: NIfTI (3-D, 4-D, a header declaring billions of voxels) and zips of DICOM series."""
    import tempfile
    import zipfile

    import nibabel as nib

    volume = np.stack([head, np.roll(head, 3, axis=1), head[::-1]], axis=-1).astype(np.int16)
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data, affine in (("a.nii.gz", volume, np.diag([1, 1, 3, 1.0])), ("b.nii", volume[::-1], np.eye(4)),
                                   ("c.nii.gz", np.stack([volume] * 2, -1), np.eye(4))):
            nib.save(nib.Nifti1Image(data, affine), f"{tmp}/{name}")
            seeds.append((name[1:], Path(f"{tmp}/{name}").read_bytes()))
    header = nib.Nifti1Header()
    header.set_data_shape((3000, 3000, 3000))
    seeds.append((".nii", header.binaryblock + b"\0" * 68))

    def zipped(members, method=zipfile.ZIP_DEFLATED):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as z:
            for name, data in members:
                z.writestr(name, data)
        return buf.getvalue()

    series = [(f"IM{k}.dcm", dicom_bytes(32, 32, position=k, series=f"1.2.{k // 2}")) for k in range(4)]
    one = [(n, dicom_bytes(32, 32, position=k)) for k, (n, _) in enumerate(series)]
    # stored, not deflated: mutations reach the DICOM headers inside instead of failing the checksum
    seeds += [(".zip", zipped(one)), (".zip", zipped(one, zipfile.ZIP_STORED)), (".zip", zipped(series, zipfile.ZIP_STORED)),
              (".zip", zipped(series)), (".zip", zipped([("../../x.dcm", series[0][1])])),
              (".zip", zipped([("big.dcm", b"\0" * 3_000_000)])), (".zip", zipped([("notes.txt", b"hello")]))]
    return seeds


@st.composite
def mutated_files(draw, seeds: list):
    """(extension, bytes): a seed file, maybe under another extension, after a few mutations."""
    ext, data = draw(st.sampled_from(seeds))
    if draw(st.integers(0, 9)) == 0:
        ext = draw(st.sampled_from(EXTENSIONS))  # a file whose name lies about its format
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "overwrite_header"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        else:  # width / height / tag fields sit in the first few hundred bytes
            spot = draw(st.integers(0, min(len(data), 400) - 1))
            data[spot:spot + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\x7f\xff",
                                                        b"\x00\x01\x00\x00"]))
    return ext, bytes(data)


def run_handler(app, clf, path: Path):
    """The app's handler to its last answer, the file given to the input the page would put it in."""
    scan = path.name.lower().endswith(SCAN_INPUT)
    return list(app.analyse(clf, None, str(path)) if scan else app.analyse(clf, str(path)))[-1]


def classify(call, folder: Path, ext: str, data: bytes):
    """Runs ``call(path)`` on the file; returns (outcome, seconds, message).

    outcome: "result", "message" (ValueError or gr.Error naming no server path) or "BUG: ...".
    """
    import gradio as gr

    path = folder / f"upload{ext}"
    path.write_bytes(data)
    t = time.perf_counter()
    try:
        call(path)
        outcome, message = "result", ""
    except (ValueError, gr.Error) as e:
        message = str(getattr(e, "message", e))
        outcome = ("BUG: server path in message" if str(folder) in message
                   else "BUG: internal error" if message.startswith("Something went wrong") else "message")
    except Exception as e:  # anything else is a bug to report
        outcome, message = f"BUG: {type(e).__name__}", str(e)[:200]
    return outcome, time.perf_counter() - t, message


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "model"))
    p.add_argument("--examples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import tempfile
    import warnings
    from functools import partial

    import psutil
    from hypothesis import HealthCheck, given, settings

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # app.py
    import app
    from brain_mri import BrainMRIClassifier

    warnings.filterwarnings("ignore")
    clf = BrainMRIClassifier.from_pretrained(args.model)
    call = partial(run_handler, app, clf)
    folder = Path(tempfile.mkdtemp(prefix="brain-mri-fuzz-"))
    seeds = seed_files()
    for ext, data in seeds[:3]:  # warm: the first analysis builds caches that are no growth
        classify(call, folder, ext, data)
    runs, rss, proc = [], [], psutil.Process()
    rss0 = proc.memory_info().rss

    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(mutated_files(seeds))
    def fuzz(case):
        runs.append((*classify(call, folder, *case), case[0], len(case[1])))
        if len(runs) % 2000 == 0:  # growth that keeps going is a leak; a step is a cache
            rss.append((len(runs), (proc.memory_info().rss - rss0) / 2**20))

    fuzz()
    report(runs, rss)


def report(runs: list, rss: list) -> None:
    outcomes = {}
    for outcome, *_ in runs:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    slowest = max(runs, key=lambda r: r[1])
    times = [r[1] for r in runs]
    print("| measure | value |\n|---|---:|")
    print(f"| inputs run | {len(runs)} |")
    for outcome, n in sorted(outcomes.items()):
        print(f"| outcome: {outcome} | {n} |")
    print(f"| over 2 s | {sum(t > 2 for t in times)} |")
    print(f"| median / slowest (ms) | {statistics.median(times) * 1000:.1f} / {slowest[1] * 1000:.0f} |")
    print(f"| slowest input | {slowest[3]}, {slowest[4]} bytes: {slowest[0]} {slowest[2][:80]!r} |")
    print("| RSS growth after warm-up (MB) | " + ", ".join(f"{mb:.0f} after {n:,}" for n, mb in rss) + " |")
    for r in [r for r in runs if r[0].startswith("BUG")][:10]:
        print(f"bug: {r[0]} on {r[3]} ({r[4]} bytes): {r[2]}")


if __name__ == "__main__":
    main()
