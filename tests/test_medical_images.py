"""med_r1.data.medical on real files bundled in the pydicom and nibabel wheels (no downloads), modified in tmp_path."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import logging
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as NIBABEL_DATA
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.sequence import Sequence

from med_r1.data.dicom import is_dicom, load_dicom, load_dicom_series
from med_r1.data.frames import WINDOW_PRESETS, MedicalImageError, sample_indices
from med_r1.data.medical import is_nifti, load_frames, load_nifti


def dicom_file(name: str) -> Path:
    path = get_testdata_file(name)  # only names shipped in the pydicom wheel: others would try the network
    assert path is not None, name
    return Path(path)


CT5N = dicom_file("CT_small.dcm").parent / "dicomdirtests" / "98892001" / "CT5N"


def arrays(images: list[Image.Image]) -> list[np.ndarray]:
    assert images and all(isinstance(im, Image.Image) and im.mode == "RGB" for im in images)
    return [np.asarray(im) for im in images]


def grey(image: Image.Image) -> np.ndarray:
    a = np.asarray(image).astype(int)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    return a[..., 0]


def expected_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    return np.clip(((hu - (level - 0.5)) / (width - 1) + 0.5) * 255, 0, 255).round()


def save_modified(src: Path, dst: Path, **changes) -> Path:
    ds = pydicom.dcmread(src)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(dst)
    return dst


# ---------------------------------------------------------------- sampling and detection


def test_sample_indices_even_deterministic_and_complete():
    assert sample_indices(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert sample_indices(5, 8) == sample_indices(5, 5) == [0, 1, 2, 3, 4]
    assert sample_indices(100, 2) == [0, 99]
    assert sample_indices(9, 1) == [4]
    steps = np.diff(sample_indices(1000, 16))
    assert steps.min() >= 66 and steps.max() <= 67
    with pytest.raises(ValueError):
        sample_indices(10, 0)


def test_detection(tmp_path):
    slice_without_suffix = CT5N / "2062"
    assert is_dicom(slice_without_suffix)  # DICM magic at byte 128
    assert is_dicom(CT5N) and not is_dicom(CT5N.parent)  # a folder with DICOM files; one with only subfolders
    upper = shutil.copy(dicom_file("CT_small.dcm"), tmp_path / "SCAN.DCM")
    assert is_dicom(upper)
    png = tmp_path / "x.png"
    Image.new("L", (4, 4)).save(png)
    assert not is_dicom(png) and not is_dicom(tmp_path / "missing")
    assert is_nifti("a/B.NII.GZ") and is_nifti("b.nii") and not is_nifti("c.nii.bak") and not is_nifti("d.gz")
    assert WINDOW_PRESETS["mediastinum"] == WINDOW_PRESETS["soft_tissue"] == WINDOW_PRESETS["soft-tissue"] == (400, 40)
    assert WINDOW_PRESETS["brain"] == (80, 40) and WINDOW_PRESETS["lung"] == (1500, -600)
    assert WINDOW_PRESETS["bone"] == (2000, 300)


# ---------------------------------------------------------------- single DICOM files


def test_ct_rescale_then_preset_window():
    path = dicom_file("CT_small.dcm")  # RescaleIntercept -1024, no window in the file
    hu = pydicom.dcmread(path).pixel_array.astype(float) - 1024
    (brain,) = load_frames(path, window="brain")
    assert brain.size == (128, 128)
    assert np.abs(grey(brain) - expected_window(hu, 80, 40)).max() <= 1
    outputs = {w: grey(load_frames(path, window=w)[0]) for w in ("auto", "lung", "bone", "soft-tissue")}
    assert not np.array_equal(outputs["auto"], outputs["lung"])
    assert not np.array_equal(outputs["lung"], outputs["bone"])
    assert np.array_equal(outputs["soft-tissue"], grey(load_frames(path, window="mediastinum")[0]))
    assert np.array_equal(outputs["bone"], grey(load_frames(path, window=(2000, 300))[0]))
    with pytest.raises(MedicalImageError, match="unknown window 'liver'"):
        load_frames(path, window="liver")


def test_auto_uses_the_files_window_and_monochrome1_inverts(tmp_path):
    src = dicom_file("MR_small.dcm")  # WindowCenter 600, WindowWidth 1600
    raw = pydicom.dcmread(src).pixel_array.astype(float)
    auto = grey(load_dicom(src)[0])
    assert np.abs(auto - expected_window(raw, 1600, 600)).max() <= 1
    narrow = save_modified(src, tmp_path / "narrow.dcm", WindowCenter=300, WindowWidth=200)
    assert np.abs(grey(load_dicom(narrow)[0]) - expected_window(raw, 200, 300)).max() <= 1
    assert not np.array_equal(grey(load_dicom(narrow)[0]), auto)
    inverted = save_modified(src, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1")
    assert np.abs(grey(load_dicom(inverted)[0]) - (255 - auto)).max() <= 1
    assert np.abs(grey(load_dicom(inverted, window="brain")[0]) - (255 - expected_window(raw, 80, 40))).max() <= 1


def test_multivalued_window_takes_the_first_and_no_window_falls_back_to_percentiles(tmp_path):
    src = dicom_file("examples_overlay.dcm")  # WindowCenter [450, 200], WindowWidth [790, 443]
    assert np.array_equal(grey(load_dicom(src)[0]), grey(load_dicom(src, window=(790, 450))[0]))
    bare = save_modified(src, tmp_path / "bare.dcm", WindowCenter=None, WindowWidth=None)
    raw = pydicom.dcmread(src).pixel_array.astype(float)
    lo, hi = np.percentile(raw, [0.5, 99.5])
    expected = np.clip((raw - lo) / (hi - lo) * 255, 0, 255).round()
    assert np.abs(grey(load_dicom(bare)[0]) - expected).max() <= 1
    assert np.array_equal(grey(load_dicom(bare)[0]), grey(load_dicom(src, window=None)[0]))


def test_enhanced_window_in_functional_groups(tmp_path):
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 300, 200
    group = Dataset()
    group.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([group])
    ds.save_as(tmp_path / "enhanced.dcm")
    expected = expected_window(ds.pixel_array.astype(float), 200, 300)
    assert np.abs(grey(load_dicom(tmp_path / "enhanced.dcm")[0]) - expected).max() <= 1


def test_voi_lut_sequence_when_no_window(tmp_path):
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.add_new(0x00283006, "OW", np.linspace(0, 65535, 4096).astype("<u2").tobytes())  # LUTData: a linear ramp
    ds.VOILUTSequence = Sequence([lut])
    ds.save_as(tmp_path / "voi_lut.dcm")
    expected = np.clip(ds.pixel_array / 4095 * 255, 0, 255).round()
    assert np.abs(grey(load_dicom(tmp_path / "voi_lut.dcm")[0]) - expected).max() <= 1


def test_ybr_cine_gives_evenly_spaced_rgb_frames():
    path = dicom_file("examples_ybr_color.dcm")  # US cine, 30 frames, YBR_FULL_422 JPEG baseline
    ds = pydicom.dcmread(path)
    frames = arrays(load_frames(path, frames=8))
    assert len(frames) == 8 and frames[0].shape == (240, 320, 3)
    for frame, index in zip(frames, [0, 4, 8, 12, 17, 21, 25, 29], strict=True):
        assert np.array_equal(frame, pixel_array(ds, index=index))  # pydicom's RGB, untouched (no windowing)
    chroma = pixel_array(ds, index=0, raw=True)[..., 1:].mean()
    assert abs(chroma - 128) < 5 and abs(frames[0][..., 1:].mean() - frames[0][..., 0].mean()) < 5  # YBR -> RGB done
    assert len(load_frames(path, frames=64)) == 30


@pytest.mark.parametrize("name, size", [("examples_rgb_color.dcm", (320, 240)), ("examples_palette.dcm", (800, 350))])
def test_colour_dicom(name, size):
    (image,) = load_frames(dicom_file(name))
    assert image.size == size and image.mode == "RGB"
    assert np.asarray(image).std(axis=-1).max() > 0  # really colour, not grey copied to 3 channels


def test_jpeg2000_ct():
    (image,) = load_frames(dicom_file("J2K_pixelrep_mismatch.dcm"), window="bone")
    assert image.size == (512, 512) and 0 < grey(image).mean() < 255


# ---------------------------------------------------------------- DICOM series


def shuffled_series(folder: Path) -> list[str]:
    """CT5N copied under names whose order is neither spatial nor InstanceNumber; returns the names by ascending z."""
    folder.mkdir()
    names = {"2062": "c", "2392": "a", "2693": "e", "3023": "b", "3353": "d"}
    for src, dst in names.items():
        shutil.copy(CT5N / src, folder / dst)
    (folder / "notes.txt").write_text("not an image")
    z = {dst: float(pydicom.dcmread(folder / dst).ImagePositionPatient[2]) for dst in names.values()}
    return sorted(z, key=z.get)


def test_series_sorted_by_position_not_names_or_instance_number(tmp_path):
    by_z = shuffled_series(tmp_path / "series")
    numbers = [int(pydicom.dcmread(tmp_path / "series" / n).InstanceNumber) for n in by_z]
    assert by_z != sorted(by_z) and numbers != sorted(numbers)  # the test discriminates both wrong orders
    got = arrays(load_frames(tmp_path / "series", window="soft-tissue"))
    want = [arrays(load_dicom(tmp_path / "series" / n, window="soft-tissue"))[0] for n in by_z]
    assert len(got) == 5 and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    three = arrays(load_dicom_series(tmp_path / "series", window="soft-tissue", frames=3))
    assert all(np.array_equal(a, got[i]) for a, i in zip(three, [0, 2, 4], strict=True))


def test_series_without_geometry_falls_back_to_instance_number(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for i, src in enumerate(sorted(CT5N.iterdir())):
        save_modified(src, folder / f"{9 - i}.dcm", ImagePositionPatient=None)
    by_number = sorted(folder.iterdir(), key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    got = arrays(load_frames(folder, window="bone"))
    assert all(np.array_equal(g, arrays(load_dicom(p, window="bone"))[0]) for g, p in zip(got, by_number, strict=True))


def test_series_picks_the_largest_and_says_so(tmp_path, caplog):
    shuffled_series(tmp_path / "series")
    shutil.copy(dicom_file("CT_small.dcm"), tmp_path / "series" / "other.dcm")  # another series, 128x128
    with caplog.at_level(logging.WARNING, logger="med_r1.data.medical"):
        frames = load_frames(tmp_path / "series")
    assert len(frames) == 5 and frames[0].size == (16, 16)
    assert "2 image stacks" in caplog.text and "series" in caplog.text


# ---------------------------------------------------------------- NIfTI


def nifti(name: str) -> nib.Nifti1Image:
    return nib.load(os.path.join(NIBABEL_DATA, name))


def test_nifti_4d_takes_volume_0(tmp_path):
    img = nifti("example4d.nii.gz")  # EPI 128x96x24x2
    got = arrays(load_frames(Path(NIBABEL_DATA) / "example4d.nii.gz"))
    assert len(got) == 8 and got[0].shape == (96, 128, 3)  # rot90: rows run along y
    data = np.asarray(img.dataobj)
    for volume, same in ((0, True), (1, False)):
        nib.save(nib.Nifti1Image(data[..., volume], img.affine), tmp_path / f"v{volume}.nii.gz")
        other = arrays(load_frames(tmp_path / f"v{volume}.nii.gz"))
        assert all(np.array_equal(a, b) for a, b in zip(got, other, strict=True)) == same


def test_nifti_canonical_orientation(tmp_path):
    img = nifti("anatomical.nii")  # LAS on disk
    data = np.asarray(img.dataobj)
    flip = np.diag([-1.0, 1.0, -1.0, 1.0])
    flip[:3, 3] = [data.shape[0] - 1, 0, data.shape[2] - 1]
    nib.save(nib.Nifti1Image(data[::-1, :, ::-1].copy(), img.affine @ flip), tmp_path / "flipped.nii")
    original = arrays(load_nifti(Path(NIBABEL_DATA) / "anatomical.nii"))
    flipped = arrays(load_nifti(tmp_path / "flipped.nii"))
    assert len(original) == 8 and original[0].shape == (41, 33, 3)
    assert all(np.array_equal(a, b) for a, b in zip(original, flipped, strict=True))
    assert not np.array_equal(original[0], original[0][:, ::-1])  # the flip is visible, so the test can fail


def test_nifti_radiological_display(tmp_path):
    volume = np.zeros((8, 6, 3), np.float32)
    volume[7, 5, 1] = 100  # RAS affine: x = 7 is the patient's right, y = 5 anterior
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "marker.nii.gz")
    (image,) = load_frames(tmp_path / "marker.nii.gz")  # only slice 1 is foreground
    assert image.size == (8, 6) and np.argwhere(grey(image) == 255).tolist() == [[0, 0]]  # top left, as DICOM shows it


def test_nifti_foreground_range_and_window(tmp_path):
    img = nifti("anatomical.nii")
    data = np.asarray(img.dataobj).astype(np.float32)
    padded = np.zeros(data.shape[:2] + (data.shape[2] + 20,), np.float32)
    padded[:, :, 10:-10] = data
    nib.save(nib.Nifti1Image(padded, img.affine), tmp_path / "padded.nii.gz")
    original = arrays(load_frames(Path(NIBABEL_DATA) / "anatomical.nii", frames=6))
    trimmed = arrays(load_frames(tmp_path / "padded.nii.gz", frames=6))  # empty slices are not sampled
    assert len(trimmed) == 6 and all(np.array_equal(a, b) for a, b in zip(original, trimmed, strict=True))
    windowed = arrays(load_nifti(Path(NIBABEL_DATA) / "anatomical.nii", frames=6, window="bone"))
    assert not all(np.array_equal(a, b) for a, b in zip(original, windowed, strict=True))


# ---------------------------------------------------------------- Pillow formats and .npy


def test_pillow_formats(tmp_path):
    ct = pydicom.dcmread(dicom_file("CT_small.dcm")).pixel_array.astype(np.uint16)
    rgb = pydicom.dcmread(dicom_file("examples_rgb_color.dcm")).pixel_array
    Image.fromarray(ct).save(tmp_path / "ct16.PNG")
    (scaled,) = load_frames(tmp_path / "ct16.PNG")
    lo, hi = np.percentile(ct, [0.5, 99.5])
    assert np.abs(grey(scaled) - np.clip((ct - lo) / (hi - lo) * 255, 0, 255).round()).max() <= 1
    Image.fromarray(rgb).save(tmp_path / "us.JPG", quality=95)
    Image.fromarray(rgb).convert("P").save(tmp_path / "us_palette.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "us_rgba.tif")
    Image.fromarray(rgb).save(tmp_path / "us.bmp")
    for name in ("us.JPG", "us_palette.png", "us_rgba.tif", "us.bmp"):
        (image,) = load_frames(tmp_path / name)
        assert image.mode == "RGB" and image.size == (320, 240), name
    assert np.array_equal(arrays(load_frames(tmp_path / "us.bmp"))[0], rgb)


def test_multipage_tiff_stack_vs_pyramid(tmp_path):
    series = [pydicom.dcmread(p).pixel_array.astype(np.uint16) for p in sorted(CT5N.iterdir())]
    pages = [Image.fromarray(s) for s in series]
    pages[0].save(tmp_path / "stack.tiff", save_all=True, append_images=pages[1:])
    assert len(load_frames(tmp_path / "stack.tiff", frames=3)) == 3  # same size and mode: a z-stack
    rgb = Image.fromarray(pydicom.dcmread(dicom_file("examples_rgb_color.dcm")).pixel_array)
    rgb.save(tmp_path / "pyramid.tif", save_all=True, append_images=[rgb.resize((160, 120))])
    (only,) = load_frames(tmp_path / "pyramid.tif")  # a thumbnail page: first page only
    assert only.size == (320, 240)


def test_npy_slices_and_images(tmp_path):
    hu = pydicom.dcmread(dicom_file("CT_small.dcm")).pixel_array.astype(np.float32) - 1024
    np.save(tmp_path / "slice.npy", hu)
    np.save(tmp_path / "stack.npy", np.stack([hu + i for i in range(12)]))
    assert len(load_frames(tmp_path / "slice.npy")) == 1
    assert len(load_frames(tmp_path / "stack.npy", frames=4)) == 4
    (brain,) = load_frames(tmp_path / "slice.npy", window="brain")
    assert np.abs(grey(brain) - expected_window(hu, 80, 40)).max() <= 1
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 5, 6)))
    with pytest.raises(MedicalImageError, match="bad.npy"):
        load_frames(tmp_path / "bad.npy")


# ---------------------------------------------------------------- failures name the file


def test_failures_raise_medical_image_error_naming_the_file(tmp_path):
    png = tmp_path / "scan.png"
    Image.fromarray(pydicom.dcmread(dicom_file("examples_rgb_color.dcm")).pixel_array).save(png)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "empty").mkdir()
    cases = {
        truncated: "truncated.png",
        tmp_path / "notes.jpg": "not DICOM, NIfTI, .npy or an image Pillow can read",
        tmp_path / "missing.dcm": "file not found",
        tmp_path / "empty": "no DICOM",
        dicom_file("MR_truncated.dcm"): "MR_truncated.dcm",
        dicom_file("rtplan.dcm"): "no pixel data",
        dicom_file("SC_rgb_jpeg_gdcm.dcm"): "JPEG Lossless.*install pylibjpeg pylibjpeg-libjpeg",
    }
    for path, message in cases.items():
        with pytest.raises(MedicalImageError, match=message) as info:
            load_frames(path)
        assert str(path) in str(info.value) and isinstance(info.value, ValueError)
    clone = pickle.loads(pickle.dumps(info.value))
    assert clone.path == info.value.path and str(clone) == str(info.value)
