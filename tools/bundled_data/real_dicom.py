"""Real DICOM images from pydicom and pydicom-data: CT, MR, radiographs and ultrasound, each answer from a tag."""

from __future__ import annotations

import numpy as np

from .encode import window
from .questions import CT, DD_Q, MR, OBA_Q, QA, US, XR, anatomy_qa, modality_qa, plane_qa, yes_no
from .sources import Picture, item, pydicom_data_file, pydicom_file

PYDICOM_LICENCE = (
    "MIT (pydicom); test_files/README.txt: 'I believe there is no restriction on using any of these files'"
)
GDCM_LICENCE = PYDICOM_LICENCE + "; derived from a GDCM test file: BSD-3-Clause (GDCM), see NOTICE"
PYDICOM_DATA_LICENCE = "MIT (pydicom-data); provenance per pydicom's test_files/README.txt"
NEMA_NOTE = "pydicom test_files/README.txt: from ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04"
SOFT_TISSUE = " (soft-tissue preset; the file has no window tags)"
FILE_WINDOW = " (the file's window tags)"
J2K = "JPEG 2000 lossless decoded by pydicom (Pillow/OpenJPEG)"
AS_SHOWN = "burned-in text kept, image not flipped"


def dicom_grey(ds, centre: float, width: float) -> tuple[np.ndarray, list[str]]:
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    out = window(values, centre, width)
    steps = [
        f"pydicom pixel_array + modality LUT (RescaleSlope/Intercept); window centre {centre:g} / width {width:g}"
    ]
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 255 - out
        steps.append("MONOCHROME1 inverted after windowing (bone white)")
    return out, steps


def windowed(centre: float, width: float, why: str, *noted: str):
    """Greyscale pixels through the modality LUT and a window; `why` says where the window comes from."""

    def pixels(ds) -> tuple[np.ndarray, list[str]]:
        grey, steps = dicom_grey(ds, centre, width)
        steps[0] += why
        return grey, steps + list(noted)

    return pixels


def anterior_up(ds) -> tuple[np.ndarray, list[str]]:
    """explicit_VR-UN: soft-tissue window, and rows reversed when the column direction points posterior."""
    grey, steps = windowed(40, 400, SOFT_TISSUE)(ds)
    iop = [float(v) for v in ds.ImageOrientationPatient]
    if iop[4] < 0:  # column direction points anterior: flip rows so anterior is up (left-right is unchanged)
        grey = grey[::-1].copy()
        steps.append("rows reversed (vertical flip only) because ImageOrientationPatient = [1,0,0,0,-1,0] puts "
                     "posterior at the top; this restores the standard display, patient's right stays on the "
                     "viewer's left")  # fmt: skip
    return grey, steps


def colour(*steps: str, frame: int | None = None):
    """RGB pixel data as stored (one frame of a cine when `frame` is given)."""
    return lambda ds: (np.ascontiguousarray(ds.pixel_array if frame is None else ds.pixel_array[frame]), list(steps))


def palette(ds) -> tuple[np.ndarray, list[str]]:
    from pydicom.pixels import apply_color_lut

    rgb16 = apply_color_lut(ds.pixel_array, ds)
    rgb = (rgb16.astype(np.uint32) >> 8).astype(np.uint8)  # 16-bit palette entries -> 8 bit (exact integer shift)
    return np.ascontiguousarray(rgb), [
        "PALETTE COLOR applied with pydicom apply_color_lut; 16-bit entries shifted to 8 bit"
    ]


def overlay_questions(ds) -> list[QA]:
    # The overlay holds a closed contour in the image's left half (the liver) plus the text 'Tra' and a partial box
    # at the right border; the contour's extent is recorded as evidence.
    overlay = ds.overlay_array(0x6000)
    ys, xs = np.nonzero(overlay[:, : overlay.shape[1] // 2])
    return [
        modality_qa(MR, "DICOM Modality = MR", "examples_overlay"),
        anatomy_qa("Abdomen", ["Head", "Knee", "Pelvis"], "DICOM BodyPartExamined = ABDOMEN"),
        anatomy_qa("Liver", ["Brain", "Heart", "Urinary bladder"],
                   "DICOM StudyDescription = 'abdomen^liver'",
                   "Which organ is the target of this abdominal study?"),
        QA(DD_Q, "What abnormality is marked in this study?", "A focal liver lesion",
           ["A fractured femur", "A collapsed lung", "No abnormality"],
           "DICOM SeriesDescription = 'marked lesion<MPR Collection>', StudyDescription = 'abdomen^liver'; the "
           f"overlay plane (6000,3000) draws a closed contour at rows {int(ys.min())}-{int(ys.max())}, columns "
           f"{int(xs.min())}-{int(xs.max())} of the 300x484 grid, inside the liver (checked by eye)"),
        QA(OBA_Q, "Which weighting does this MR sequence have?", "T1-weighted",
           ["T2-weighted", "Diffusion-weighted", "Proton density-weighted"],
           "DICOM ProtocolName = 't1_vibe_fs_tra_bh_dyn' (T1 VIBE, fat-saturated)"),
        yes_no(OBA_Q, "Was a contrast agent given for this MR acquisition?", True,
               "DICOM ContrastBolusAgent = '11 ml Omniscan' (gadodiamide, a gadolinium-based agent)"),
    ]  # fmt: skip


DICOM_PICTURES = (
    # --- CT -----------------------------------------------------------------------------------------------------
    Picture(
        "pydicom-testdata", "CT_small.png", CT, pydicom_file("CT_small.dcm"), PYDICOM_LICENCE,
        windowed(40, 400, SOFT_TISSUE),
        lambda ds: [
            modality_qa(CT, "DICOM Modality = CT", "CT_small"),
            anatomy_qa(
                "A vertebra (spine)", ["The knee joint", "The eye globe", "The skull vault"],
                "visual: a vertebral body with posterior elements fills the image centre (axial CT, ImageType AXIAL)",
                "Which bony structure is in the centre of this image?",
            ),
            yes_no(OBA_Q, "Was an intravenous contrast agent used for this CT acquisition?", True,
                   "DICOM ContrastBolusAgent (0018,0010) = 'ISOVUE300/100' (iopamidol)"),
            plane_qa("axial", "DICOM ImageType contains AXIAL; ImageOrientationPatient = [1,0,0,0,1,0]"),
        ],
        documentation=(NEMA_NOTE + " (CT1_UNC, downsized to 128x128)",), dicom=True,
    ),
    Picture(
        "pydicom-testdata", "CT head.png", CT, pydicom_file("J2K_pixelrep_mismatch.dcm"), PYDICOM_LICENCE,
        windowed(40, 100, " (the file's first WindowCenter/WindowWidth pair)"),
        lambda ds: [
            modality_qa(CT, "DICOM Modality = CT", "J2K_head", variant=1),
            anatomy_qa("Head", ["Chest", "Pelvis", "Knee"], "DICOM BodyPartExamined = HEAD"),
            plane_qa("axial", "DICOM ImageType contains AXIAL (ImageOrientationPatient: axial with gantry tilt)"),
        ],
        after=(J2K,), documentation=("pydicom test_files/README.txt: 'Dataset from issue 1149'",), dicom=True,
    ),
    Picture(
        "pydicom-data", "explicit_VR-UN.png", CT, pydicom_data_file("explicit_VR-UN.dcm"), PYDICOM_DATA_LICENCE,
        anterior_up,
        lambda ds: [
            modality_qa(CT, "DICOM Modality = CT", "explicit_VR-UN"),
            anatomy_qa("Abdomen", ["Head", "Knee", "Shoulder"],
                       "DICOM BodyPartExamined = PANCREAS, StudyDescription = Pancreas (an abdominal organ)"),
            plane_qa("axial", "DICOM ImageType contains AXIAL; ImageOrientationPatient = [1,0,0,0,-1,0]"),
        ],
        after=(J2K,),
        documentation=("pydicom test_files/README.txt: 'original image taken from https://www.cancerimagingarchive.net, "
                       "(freely available de-identified datasets)'",),
        dicom=True,
    ),
    # --- MR -----------------------------------------------------------------------------------------------------
    Picture(
        "pydicom-testdata", "examples_overlay.png", MR, pydicom_file("examples_overlay.dcm"), GDCM_LICENCE,
        windowed(450, 790, " (the file's first window pair); the overlay plane (6000,3000) is NOT burned in"),
        overlay_questions,
        documentation=("pydicom test_files/README.txt: 'examples_overlay.dcm: MR-SIEMENS-DICOM-WithOverlays.dcm with "
                       "cropped Pixel Data and Overlay Data'; 'MR-SIEMENS-DICOM-WithOverlays.dcm (from GDCM)'",),
        dicom=True,
    ),
    Picture(
        "pydicom-data", "MR2_UNCI.png", MR, pydicom_data_file("MR2_UNCI.dcm"), PYDICOM_DATA_LICENCE,
        windowed(1000, 2000, FILE_WINDOW),
        lambda ds: [
            modality_qa(MR, "DICOM Modality = MR", "MR2_UNCI", variant=1),
            anatomy_qa("Shoulder", ["Knee", "Brain", "Abdomen"], "DICOM StudyDescription = SHOULDER"),
            QA(OBA_Q, "Which MR weighting was used for this image?", "T1-weighted spin echo",
               ["T2-weighted gradient echo", "Diffusion-weighted echo-planar", "Time-of-flight angiography"],
               "DICOM ProtocolName = 'T1W/SE/1024', ScanningSequence = SE"),
        ],
        documentation=(NEMA_NOTE,), dicom=True,
    ),
    # --- X-ray --------------------------------------------------------------------------------------------------
    Picture(
        "pydicom-data", "RG1_UNCI chest.png", XR, pydicom_data_file("RG1_UNCI.dcm"), PYDICOM_DATA_LICENCE,
        windowed(15000, 30000, FILE_WINDOW),
        lambda ds: [
            modality_qa(XR, "DICOM Modality = CR (computed radiography)", "RG1"),
            modality_qa(XR, "DICOM Modality = CR (computed radiography)", "RG1b", n_options=3, variant=1),
            anatomy_qa("Chest", ["Abdomen", "Pelvis", "Skull"],
                       "DICOM BodyPartExamined = CHEST, StudyDescription = THORAX"),
            QA(OBA_Q, "Which projection was used for this radiograph?", "Posteroanterior (PA)",
               ["Anteroposterior (AP)", "Lateral"], "DICOM ViewPosition = PA"),
        ],
        documentation=(NEMA_NOTE,), dicom=True,
    ),
    Picture(
        "pydicom-data", "RG3_UNCI lower leg.png", XR, pydicom_data_file("RG3_UNCI.dcm"), PYDICOM_DATA_LICENCE,
        windowed(550, 1024, FILE_WINDOW,
                 "displayed as stored (PatientOrientation R\\F, the burned-in 'R' marker reads mirrored); not flipped"),
        lambda ds: [
            modality_qa(XR, "DICOM Modality = CR (computed radiography)", "RG3", variant=1),
            anatomy_qa("Lower leg (tibia)", ["Chest", "Skull", "Hand"],
                       "DICOM BodyPartExamined = EXTREMITY, AcquisitionDeviceProcessingDescription = 'LOWER LEG', "
                       "StudyDescription = 'Non-ossifying fibroma of distal tibia'"),
            QA(DD_Q, "What diagnosis is recorded for this radiograph?", "Non-ossifying fibroma of the distal tibia",
               ["Displaced fracture of the tibial shaft", "Dislocated ankle joint", "No abnormality"],
               "DICOM StudyDescription = 'Non-ossifying fibroma of distal tibia'"),
            QA(OBA_Q, "Which projection was used for this radiograph?", "Anteroposterior (AP)",
               ["Posteroanterior (PA)", "Lateral"], "DICOM ViewPosition = AP"),
        ],
        documentation=(NEMA_NOTE,), dicom=True,
    ),
    # --- Ultrasound ---------------------------------------------------------------------------------------------
    Picture(
        "pydicom-data", "US1_UNCI lymph node.jpg", US, pydicom_data_file("US1_UNCI.dcm"), PYDICOM_DATA_LICENCE,
        colour("RGB pixel data as stored"),
        lambda ds: [
            modality_qa(US, "DICOM Modality = US", "US1"),
            anatomy_qa("Lymph node", ["Brain", "Lung", "Femur"],
                       "burned-in label 'LYMPH NODE' in the image; DICOM ImageType contains 'SMALL PARTS'",
                       "Which structure is being examined in this image?"),
            yes_no(OBA_Q, "Does this ultrasound image include a colour Doppler flow overlay?", True,
                   "visual: colour-coded flow signal inside a Doppler box with a colour scale bar"),
        ],
        after=(AS_SHOWN,), documentation=(NEMA_NOTE,), dicom=True,
    ),
    Picture(
        "pydicom-data", "color-px TEE.jpg", US, pydicom_data_file("color-px.dcm"), PYDICOM_DATA_LICENCE,
        colour("RGB pixel data as stored (120x256, not resized)"),
        lambda ds: [
            modality_qa(US, "DICOM Modality = US", "color-px", n_options=3, variant=1),
            anatomy_qa("Heart", ["Liver", "Kidney", "Thyroid"],
                       "DICOM StudyDescription = Echocardiogram, SeriesDescription = Transesophageal Echocardiogram"),
            QA(OBA_Q, "From where was this echocardiogram acquired?", "Transesophageal (probe in the oesophagus)",
               ["Transthoracic (probe on the chest wall)", "Transvaginal", "Transrectal"],
               "DICOM SeriesDescription = 'Transesophageal Echocardiogram'; ImageType contains TEE"),
            yes_no(OBA_Q, "Is colour Doppler flow information shown in this image?", True,
                   "visual: red/blue colour-coded flow within the sector"),
        ],
        dicom=True,
    ),
    Picture(
        "pydicom-testdata", "examples_ybr_color frame 15.jpg", US, pydicom_file("examples_ybr_color.dcm"),
        PYDICOM_LICENCE,
        colour("frame 15 of 30 (0-based) of the cine; JPEG baseline YBR_FULL_422 decoded to RGB by pydicom",
               "240x320, not resized; burned-in text kept, image not flipped", frame=15),
        lambda ds: [
            modality_qa(US, "DICOM Modality = US", "ybr"),
            anatomy_qa("Heart", ["Liver", "Brain", "Knee"],
                       "DICOM ImageType contains EPICARDIAL; burned-in exam preset 'Crd' (cardiac); "
                       "pydicom README: derived from color3d_jpeg_baseline.dcm"),
            yes_no(OBA_Q, "Does this ultrasound frame contain a colour Doppler overlay?", False,
                   "visual: greyscale B-mode sector without colour flow"),
        ],
        documentation=("pydicom test_files/README.txt: 'examples_ybr_color.dcm: color3d_jpeg_baseline.dcm with reduced "
                       "frames and rescaled Pixel Data'",),
        dicom=True,
    ),
    Picture(
        "pydicom-data", "gdcm-US-ALOKA-16 pelvis.jpg", US, pydicom_data_file("gdcm-US-ALOKA-16.dcm"),
        PYDICOM_DATA_LICENCE + "; GDCM test file: BSD-3-Clause (GDCM), see NOTICE",
        palette,
        lambda ds: [
            modality_qa(US, "DICOM Modality = US", "ALOKA", variant=1),
            anatomy_qa("Pelvis", ["Brain", "Chest", "Hand"],
                       "burned-in label '3:PELVIS' at the bottom left of the image; DICOM ImageType 'ABDOM/RAD'"),
        ],
        after=(AS_SHOWN,), documentation=("pydicom test_files/README.txt: 'gdcm-US-ALOKA-16.dcm (from GDCM)'",),
        dicom=True,
    ),
)  # fmt: skip


def real_dicom_items():
    return [item(picture) for picture in DICOM_PICTURES]
