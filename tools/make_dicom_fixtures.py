"""Writes the DICOM fixtures of issue 14 to tests/fixtures/dicom/: one synthetic film (a seeded
phantom, 96 x 96, our own pixels) in every encoding and layout the reader supports, plus broken
files. Each "same film" fixture decodes to base.png, except window_narrow.dcm, whose expected
pixels the Rust test computes with the standard's linear VOI function, and the lossy
jpeg_baseline.dcm, whose reference jpeg_baseline_decoded.png is its own JPEG stream decoded by
Pillow.

Needs pydicom (3.x) and numpy, dcmtk's dcmcjpeg for the two JPEG encodings (Debian: dcmtk), and
Pillow built with OpenJPEG (as its wheels are) for the two JPEG 2000 ones.
`fuzz_rle_panic.dcm` and `fuzz_bits_stored_panic.dcm` beside them are not made here: they are
inputs 130 and 897770 of the fuzzer with seed 42 (`cargo run --example fuzz_decode -- --dump
130 --crashes DIR`), which panicked dicom-rs.
Usage: python tools/make_dicom_fixtures.py [OUT_DIR]
"""
import os
import subprocess
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

SIDE = 96
STUDY = UID("1.2.826.0.1.3680043.8.498.1")
SERIES = UID("1.2.826.0.1.3680043.8.498.2")


def phantom():
    """A chest-like test pattern spanning 0..255 exactly: a bright body with two darker lung
    fields, ribs and a vertical gradient, plus seeded noise."""
    rng = np.random.default_rng(17)
    y, x = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    body = 0.75 - 0.25 * y
    for cx in (0.3, 0.7):
        lung = ((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1
        body = np.where(lung, 0.25 + 0.1 * y, body)
    ribs = 0.08 * (np.sin(y * 40) > 0.7)
    film = body + ribs + rng.normal(0, 0.02, body.shape)
    film = (film - film.min()) / (film.max() - film.min())
    return np.round(film * 255).astype(np.uint8)


def dataset(pixels, bits_stored, photometric="MONOCHROME2", frames=1, instance=1):
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = UID(f"1.2.826.0.1.3680043.8.498.3.{instance}")
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.Modality = "OT"
    ds.PatientID = "PHANTOM"
    ds.PatientAge = "004Y"
    ds.PatientSex = "O"
    ds.ViewPosition = "AP"
    ds.StudyDate = "20261130"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = SIDE, SIDE
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    return ds


def with_meta(ds, syntax):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    return ds


def save(ds, path, syntax=ExplicitVRLittleEndian):
    with_meta(ds, syntax).save_as(path, enforce_file_format=True)


def jpeg2000(pixels):
    """A reversible JPEG 2000 codestream of `pixels` (Pillow's OpenJPEG encoder)."""
    import io

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG2000", no_jp2=True, irreversible=False)
    return out.getvalue()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/dicom"
    os.makedirs(out, exist_ok=True)
    base = phantom()
    Image.fromarray(base).save(os.path.join(out, "base.png"))
    path = lambda name: os.path.join(out, name)  # noqa: E731

    save(dataset(base, 8), path("explicit_le_8bit.dcm"))
    save(dataset(base, 8, instance=2), path("implicit_le_8bit.dcm"), ImplicitVRLittleEndian)
    save(dataset(base.astype(np.uint16) * 257, 16, instance=3), path("explicit_le_16bit.dcm"))
    twelve = np.round(base.astype(np.float64) * 4095 / 255).astype(np.uint16)
    save(dataset(twelve, 12, instance=4), path("explicit_le_12bit.dcm"))
    # Modality LUT: stored s, value 2 s - 1024; min-max scaling gives the phantom back.
    ds = dataset(base.astype(np.uint16) * 8, 12, instance=5)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    save(ds, path("rescale.dcm"))
    # A window spanning exactly the values: the linear VOI function maps them to the phantom.
    ds = dataset(base, 8, instance=6)
    ds.WindowCenter, ds.WindowWidth = 128.0, 256.0
    save(ds, path("window_full.dcm"))
    ds = dataset(base, 8, instance=7)
    ds.WindowCenter, ds.WindowWidth = 100.0, 120.0
    save(ds, path("window_narrow.dcm"))
    save(dataset(255 - base, 8, "MONOCHROME1", instance=8), path("monochrome1.dcm"))
    ds = with_meta(dataset(base, 8, instance=9), ExplicitVRLittleEndian)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    save(ds, path("rle.dcm"), RLELossless)
    save(dataset(base, 8, instance=10), path("deflate.dcm"), DeflatedExplicitVRLittleEndian)
    frames = np.stack([base, 255 - base])
    save(dataset(frames, 8, frames=2, instance=11), path("multiframe.dcm"))
    for option, name in (("+e1", "jpeg_lossless.dcm"), ("+eb", "jpeg_baseline.dcm")):
        args = ["dcmcjpeg", option] + (["+q", "95"] if option == "+eb" else [])
        subprocess.run(args + [path("explicit_le_8bit.dcm"), path(name)], check=True)
    # Lossy: the reference is the same JPEG stream decoded by another decoder (Pillow's libjpeg).
    lossy = pydicom.dcmread(path("jpeg_baseline.dcm")).pixel_array
    Image.fromarray(lossy.astype(np.uint8)).save(path("jpeg_baseline_decoded.png"))
    # JPEG 2000, reversible (lossless): a raw codestream (not a JP2 file) in one fragment, at 8
    # bits and at 16 bits; both decode to the phantom exactly.
    for pixels, bits, name, instance in (
        (base, 8, "jpeg2000_8bit.dcm", 15),
        (base.astype(np.uint16) * 257, 16, "jpeg2000_16bit.dcm", 16),
    ):
        ds = dataset(pixels, bits, instance=instance)
        ds.PixelData = encapsulate([jpeg2000(pixels)])
        ds["PixelData"].VR = "OB"
        save(ds, path(name), JPEG2000Lossless)
        assert np.array_equal(pydicom.dcmread(path(name)).pixel_array, pixels), name
    # No preamble and no file meta: the bare data set, implicit VR little endian.
    ds = dataset(base, 8, instance=12)
    ds.save_as(path("no_meta.dcm"), implicit_vr=True, little_endian=True, enforce_file_format=False)
    # Broken files.
    whole = open(path("explicit_le_8bit.dcm"), "rb").read()
    open(path("truncated.dcm"), "wb").write(whole[: len(whole) * 6 // 10])
    ds = dataset(base, 8, instance=13)
    del ds.PixelData
    save(ds, path("no_pixel_data.dcm"))
    ds = dataset(base, 8, instance=14)
    ds.Rows, ds.Columns = 60000, 60000
    save(ds, path("huge_declared.dcm"))
    print("wrote", sorted(os.listdir(out)))


if __name__ == "__main__":
    main()
