"""Real images from image files and volumes inside pip packages: scikit-image's fundus and microscopy pictures,
MR slices of NIfTI volumes (nibabel, dipy, nilearn) and matplotlib's sample MRI."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from .encode import percentile_window, to_uint8
from .questions import DD_Q, FUNDUS, MICRO, MR, OBA_Q, QA, anatomy_qa, modality_qa, plane_qa, yes_no
from .sources import Picture, Source, item

SKIMAGE_LICENCE = "BSD-3-Clause (scikit-image); image: "
RETINA = Source("scikit-image", "skimage", "data/retina.jpg")
RETINA_DOC = ("skimage.data.retina docstring: 'Human retina' downloaded from wikimedia "
              "'File:Fundus_photograph_of_normal_left_eye.jpg'; CC0 1.0; Häggström, Mikael (2014)")  # fmt: skip
IHC = Source("scikit-image", "skimage", "data/ihc.png")
IHC_DOC = ("skimage.data.immunohistochemistry docstring: 'Immunohistochemical (IHC) staining with hematoxylin "
           "counterstaining. This picture shows colonic glands where the IHC expression of FHL2 protein is revealed "
           "with DAB.' Acquired at the Center for Microscopy And Molecular Imaging (CMMI). 'No known copyright "
           "restrictions.'")  # fmt: skip
IHC_LICENCE = SKIMAGE_LICENCE + "'No known copyright restrictions' (CMMI)"
STAINS = ["Immunohistochemistry (DAB) with hematoxylin counterstain", "Gram stain", "Ziehl-Neelsen stain",
          "Silver impregnation only"]  # fmt: skip
BRAIN_DISTRACTORS = ["Liver", "Knee", "Lung"]
MNI = Source("nilearn", "nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
MNI_DOC = ("nilearn.datasets.load_mni152_template: 'the MNI152 skullstripped T1 template'; "
           "datasets/description/icbm152_2009.rst: 'T1-weighted anatomical template (non-linear average)', "
           "'generated from large ensembles of MRI data'; file name: ICBM152 2009a 'sym'")  # fmt: skip
MNI_LICENCE = ("BSD-3-Clause (nilearn); template: MNI ICBM152 permissive notice (see NOTICE; nilearn's "
               "description says 'License: unknown')")  # fmt: skip
RAS_AXIAL = "by construction: slice along the superior axis of the RAS+ volume"


def decoded(mode: str, *steps: str, crop: tuple[slice, slice] | None = None):
    """An image file decoded by Pillow to `mode` ('RGB' or 'L'), optionally cropped at native resolution."""

    def pixels(path: Path) -> tuple[np.ndarray, list[str]]:
        array = np.asarray(Image.open(path).convert(mode))
        return (array if crop is None else np.ascontiguousarray(array[crop])), list(steps)

    return pixels


def nifti_slice(path: Path, axis: int, index: int, volume: int = 0) -> tuple[np.ndarray, list[str]]:
    """A 2-D slice of a NIfTI in RAS+ (nibabel as_closest_canonical), rotated 90° for display (anterior/superior up)."""
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(image.dataobj, dtype=np.float64)
    if data.ndim == 4:
        data = data[..., volume]
    plane = np.take(data, index, axis=axis)
    shown = np.rot90(plane)
    steps = [
        f"nibabel as_closest_canonical (RAS+); volume {volume}; slice index {index} along axis {axis} "
        f"of shape {tuple(int(s) for s in data.shape)}; rot90 for display; intensity window = 0.5-99.5th "
        "percentiles of non-zero voxels; native size"
    ]
    return percentile_window(np.ascontiguousarray(shown)), steps


def sliced(axis: int, index: int):
    return lambda path: nifti_slice(path, axis, index)


def matplotlib_mri(path: Path) -> tuple[np.ndarray, list[str]]:
    with gzip.open(path, "rb") as handle:
        raw = np.frombuffer(handle.read(), dtype=np.uint16).reshape(256, 256)
    return percentile_window(raw), [
        "raw 256x256 uint16 read as in matplotlib's gallery (np.frombuffer(..., uint16).reshape(256, 256)); "
        "intensity window = 0.5-99.5th percentiles of non-zero pixels; native size"
    ]


SKIMAGE_PICTURES = (
    Picture(
        "skimage-data", "retina.jpg", FUNDUS, RETINA, SKIMAGE_LICENCE + "CC0 1.0 (Häggström)",
        decoded("RGB", "JPEG decoded with Pillow"),
        lambda path: [
            modality_qa(FUNDUS, "skimage docstring: fundus photograph of a human retina", "retina"),
            anatomy_qa("Retina (ocular fundus)", ["Skin surface", "Colon mucosa", "Tympanic membrane"],
                       "skimage docstring: 'Human retina', fundus photograph"),
            QA(DD_Q, "Is there any sign of disease in this fundus photograph?", "No, it's normal.",
               ["Yes, proliferative diabetic retinopathy with new vessels",
                "Yes, a retinal detachment", "Yes, a central retinal vein occlusion with widespread haemorrhages"],
               "source file title 'Fundus photograph of normal left eye' (skimage docstring)"),
            QA(OBA_Q, "Which eye is shown in this fundus photograph?", "Left eye", ["Right eye"],
               "source file title 'Fundus photograph of normal left eye' (skimage docstring)"),
        ],
        after=("not flipped (the eye's laterality is an answer)",), documentation=(RETINA_DOC,),
    ),
    Picture(
        "skimage-data", "retina optic disc (crop).jpg", FUNDUS, RETINA, SKIMAGE_LICENCE + "CC0 1.0 (Häggström)",
        decoded("RGB", "JPEG decoded with Pillow", "crop rows 464-847, columns 32-415 of the 1411x1411 original "
                "(384x384, native resolution, centred on the optic disc)", crop=np.s_[464:848, 32:416]),
        lambda path: [
            modality_qa(FUNDUS, "skimage docstring: fundus photograph of a human retina", "retina-disc"),
            anatomy_qa("Optic disc (optic nerve head)", ["Iris", "Cornea", "Eyelid margin"],
                       "visual: the optic disc with the central retinal vessels emerging from it; crop of the "
                       "skimage fundus photograph", "Which structure is at the centre of this fundus image?"),
        ],
        after=("not flipped",), documentation=(RETINA_DOC,),
    ),
    Picture(
        "skimage-data", "microaneurysms.png", FUNDUS, Source("scikit-image", "skimage", "data/microaneurysms.png"),
        SKIMAGE_LICENCE + "CC0 (Andreas Maier, HRF database)",
        decoded("L", "PNG decoded with Pillow; 102x102, not resized"),
        lambda path: [
            modality_qa(FUNDUS, "skimage docstring: detail from an image of the retina", "microaneurysms", variant=1),
            QA(DD_Q, "Which condition do the lesions in this retinal detail belong to?",
               "Diabetic retinopathy (microaneurysms)",
               ["No lesions: healthy retina", "Retinal detachment", "Papilloedema"],
               "skimage docstring: function name 'microaneurysms', 'Retina image with lesions', crop of HRF image "
               "07_dr (the HRF database's 'dr' subset is diabetic retinopathy)"),
            QA(OBA_Q, "Which colour channel of the fundus photograph is shown?", "Green channel",
               ["Red channel", "Blue channel"], "skimage docstring: 'Detail from an image of the retina (green channel)'"),
        ],
        documentation=("skimage.data.microaneurysms docstring: 'Detail from an image of the retina (green channel)', a "
                       "crop of image 07_dr.JPG from the High-Resolution Fundus (HRF) Image Database; 'Retina image "
                       "with lesions'; 'No copyright restrictions. CC0 given by owner (Andreas Maier)'",),
    ),
    Picture(
        "skimage-data", "ihc DAB & hematoxylin.jpg", MICRO, IHC, IHC_LICENCE,
        decoded("RGB", "PNG decoded with Pillow (XMP metadata not copied)"),
        lambda path: [
            modality_qa(MICRO, "skimage docstring: IHC-stained tissue section (light microscopy)", "ihc"),
            anatomy_qa("Colon (colonic glands)", ["Brain cortex", "Bone marrow", "Retina"],
                       "skimage docstring: 'colonic glands'", "Which tissue is shown in this section?"),
            QA(OBA_Q, "Which staining technique was used on this tissue?", STAINS[0], STAINS[1:],
               "skimage docstring: IHC (FHL2 revealed with DAB) with hematoxylin counterstaining"),
        ],
        documentation=(IHC_DOC,),
    ),
    Picture(
        "skimage-data", "ihc crop (centre 256px).jpg", MICRO, IHC, IHC_LICENCE,
        decoded("RGB", "PNG decoded with Pillow (XMP metadata not copied)", "centre crop rows 128-383, columns 128-383 "
                "(256x256, native resolution)", crop=np.s_[128:384, 128:384]),
        lambda path: [
            modality_qa(MICRO, "skimage docstring: IHC-stained tissue section (light microscopy)", "ihc-crop",
                        n_options=3, variant=1),
            yes_no(OBA_Q, "Is a hematoxylin counterstain used in this section?", True,
                   "skimage docstring: 'Hematoxylin counterstaining is applied'"),
            QA(OBA_Q, "What does the brown (DAB) signal in this section reveal?", "Expression of the FHL2 protein",
               ["Bacterial colonies", "Calcium deposits", "Fat droplets"],
               "skimage docstring: 'the IHC expression of FHL2 protein is revealed with DAB'"),
        ],
        documentation=(IHC_DOC,),
    ),
    Picture(
        "skimage-data", "cell.png", MICRO, Source("scikit-image", "skimage", "data/cell.png"),
        SKIMAGE_LICENCE + "CC0 1.0", decoded("L", "PNG decoded with Pillow"),
        lambda path: [
            modality_qa(MICRO, "skimage docstring: quantitative phase image at 0.107 µm pixel spacing (microscopy)",
                        "cell"),
            anatomy_qa("A single cell", ["A whole kidney", "A lung lobe", "A long bone"],
                       "skimage docstring: 'Cell floating in saline'", "What is shown in this image?"),
            QA(OBA_Q, "How was the contrast in this cell image obtained?",
               "Quantitative phase imaging (digital holography)",
               ["Fluorescent antibody staining", "Hematoxylin and eosin staining", "X-ray attenuation"],
               "skimage docstring: 'a quantitative phase image retrieved from a digital hologram'"),
        ],
        documentation=("skimage.data.cell docstring: 'Cell floating in saline. This is a quantitative phase image "
                       "retrieved from a digital hologram ... The pixel spacing is 0.107 µm.' CC0, dedicated to the "
                       "public domain.",),
    ),
)  # fmt: skip

VOLUME_PICTURES = (
    Picture(
        "nibabel-testdata", "example4d axial slice 12.png", MR, Source("nibabel", "nibabel", "tests/data/example4d.nii.gz"),
        "MIT (nibabel)", sliced(2, 12),
        lambda path: [
            modality_qa(MR, "NIfTI header dim_info = 57 (frequency/phase/slice encoding axes 0/1/2: MR k-space "
                            "encoding, set only for MR acquisitions); 4-D series of 2 volumes written by FSL",
                        "example4d", n_options=3),
            anatomy_qa("Brain", BRAIN_DISTRACTORS, "visual: axial section through the brain and skull"),
            plane_qa("axial", RAS_AXIAL),
        ],
        documentation=("nibabel test data; NIfTI header: descrip 'FSL3.3 v2.25 NIfTI-1 Single file format', "
                       "shape 128x96x24x2, voxel 2x2x2.2 mm, dim_info 57 (freq 0, phase 1, slice 2)",),
    ),
    Picture(
        "dipy-data", "S0_10slices (slice 5).png", MR, Source("dipy", "dipy", "data/files/S0_10slices.nii.gz"),
        "BSD-3-Clause (dipy)", sliced(2, 5),
        lambda path: [
            modality_qa(MR, "dipy (Diffusion Imaging in Python) test volume 'S0' = non-diffusion-weighted (b=0) MR "
                            "signal", "S0"),
            anatomy_qa("Brain", BRAIN_DISTRACTORS, "visual: axial section through the brain"),
            plane_qa("axial", RAS_AXIAL),
        ],
        documentation=("dipy.data.get_fnames('S0_10') returns this file; 'S0' is the b=0 (non-diffusion-weighted) "
                       "signal in dipy's diffusion MRI models",),
    ),
    Picture(
        "dipy-data", "t1_coronal_slice.png", MR, Source("dipy", "dipy", "data/files/t1_coronal_slice.npy"),
        "BSD-3-Clause (dipy)",
        lambda path: (to_uint8(np.load(path) * 255.0),
                      ["numpy array in [0, 1] scaled by 255; orientation as stored; 256x256, not resized"]),
        lambda path: [
            modality_qa(MR, "dipy file name 't1_coronal_slice': a T1-weighted MR slice", "t1cor", variant=1),
            anatomy_qa("Brain", BRAIN_DISTRACTORS, "visual: coronal section of the brain"),
            plane_qa("coronal", "dipy file name 't1_coronal_slice'"),
            QA(OBA_Q, "Which MR contrast weighting does this image have?", "T1-weighted",
               ["T2-weighted", "Diffusion-weighted"], "dipy file name 't1_coronal_slice'"),
        ],
        documentation=("dipy.data.get_fnames('t1_coronal_slice') returns this file",),
    ),
    Picture(
        "nilearn-MNI152", "mni152 t1 axial (slice 90).png", MR, MNI, MNI_LICENCE, sliced(2, 90),
        lambda path: [
            modality_qa(MR, "nilearn docs: T1-weighted MRI template", "mni-ax"),
            anatomy_qa("Brain", BRAIN_DISTRACTORS, "nilearn docs: whole-brain template"),
            plane_qa("axial", RAS_AXIAL),
            QA(OBA_Q, "Is this image a single patient's scan or a population template?",
               "A population-average template", ["A single patient's scan"],
               "nilearn docs: ICBM152 'non-linear average' of many MRI scans"),
        ],
        documentation=(MNI_DOC,),
    ),
    Picture(
        "nilearn-MNI152", "mni152 t1 sagittal (slice 98).png", MR, MNI, MNI_LICENCE, sliced(0, 98),
        lambda path: [
            modality_qa(MR, "nilearn docs: T1-weighted MRI template", "mni-sag", variant=1),
            anatomy_qa("Brain", BRAIN_DISTRACTORS, "nilearn docs: whole-brain template"),
            plane_qa("sagittal", "by construction: slice along the left-right axis of the RAS+ volume"),
            QA(OBA_Q, "Which MR contrast weighting does this template have?", "T1-weighted",
               ["T2-weighted", "Proton density-weighted", "Diffusion-weighted"],
               "nilearn docs: 'T1-weighted anatomical template'"),
        ],
        documentation=(MNI_DOC,),
    ),
    Picture(
        "matplotlib-sample", "s1045 sagittal head.png", MR,
        Source("matplotlib", "matplotlib", "mpl-data/sample_data/s1045.ima.gz"),
        "Matplotlib licence (PSF-based, BSD-compatible); provenance of the scan undocumented", matplotlib_mri,
        lambda path: [
            modality_qa(MR, "matplotlib gallery 'MRI with EEG': 'Load the MRI data (256x256 16-bit integers)'",
                        "mpl"),
            anatomy_qa("Head", ["Chest", "Knee", "Abdomen"], "visual: midline sagittal section of the head"),
            plane_qa("sagittal", "visual: midline sagittal section (face, brain and cervical spine in profile)"),
        ],
        documentation=("matplotlib galleries/examples/specialty_plots/mri_with_eeg.py: 'Displays a set of subplots "
                       "with an MRI image'; reads s1045.ima.gz",),
    ),
)  # fmt: skip


def real_skimage_items():
    return [item(picture) for picture in SKIMAGE_PICTURES]


def real_volume_items():
    return [item(picture) for picture in VOLUME_PICTURES]
