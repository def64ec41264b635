"""Canonical names for modalities and question types, and the aliases users type in recipes.

OmniMedVQA's raw strings carry typos (`MR (Mag-netic Resonance Imaging)`, `OCT (Optical Coherence Tomography`); loaders
keep the raw string and map it to a short canonical name used for filtering, splitting and reporting.
"""

from __future__ import annotations

import re

MODALITIES = ("CT", "MRI", "X-Ray", "Ultrasound", "Dermoscopy", "Fundus", "OCT", "Microscopy")

# Exact OmniMedVQA strings (open access), keyed to canonical names.
OMNIMEDVQA_MODALITIES = {
    "CT(Computed Tomography)": "CT",
    "MR (Mag-netic Resonance Imaging)": "MRI",
    "X-Ray": "X-Ray",
    "ultrasound": "Ultrasound",
    "Dermoscopy": "Dermoscopy",
    "Fundus Photography": "Fundus",
    "OCT (Optical Coherence Tomography": "OCT",
    "Microscopy Images": "Microscopy",
}

QUESTION_TYPES = (
    "Modality Recognition",
    "Anatomy Identification",
    "Disease Diagnosis",
    "Lesion Grading",
    "Other Biological Attributes",
)

_MODALITY_ALIASES = {
    "ct": "CT",
    "computed tomography": "CT",
    "mri": "MRI",
    "mr": "MRI",
    "magnetic resonance imaging": "MRI",
    "mag-netic resonance imaging": "MRI",
    "x-ray": "X-Ray",
    "xray": "X-Ray",
    "x ray": "X-Ray",
    "radiograph": "X-Ray",
    "cr": "X-Ray",
    "dx": "X-Ray",
    "ultrasound": "Ultrasound",
    "us": "Ultrasound",
    "dermoscopy": "Dermoscopy",
    "derm": "Dermoscopy",
    "fundus": "Fundus",
    "fundus photography": "Fundus",
    "oct": "OCT",
    "optical coherence tomography": "OCT",
    "microscopy": "Microscopy",
    "microscopy images": "Microscopy",
    "pathology": "Microscopy",
}

_QUESTION_TYPE_ALIASES = {
    "mr": "Modality Recognition",
    "modality": "Modality Recognition",
    "modality recognition": "Modality Recognition",
    "ai": "Anatomy Identification",
    "anatomy": "Anatomy Identification",
    "dd": "Disease Diagnosis",
    "diagnosis": "Disease Diagnosis",
    "lg": "Lesion Grading",
    "grading": "Lesion Grading",
    "oba": "Other Biological Attributes",
    "oa": "Other Biological Attributes",
    "other": "Other Biological Attributes",
    "biological attribute analysis": "Other Biological Attributes",
}


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def canonical_modality(raw: str) -> str:
    """Map any spelling (OmniMedVQA raw string, DICOM code, alias) to the canonical name; unknown names pass through."""
    if raw in OMNIMEDVQA_MODALITIES:
        return OMNIMEDVQA_MODALITIES[raw]
    key = _key(raw)
    if key in _MODALITY_ALIASES:
        return _MODALITY_ALIASES[key]
    stripped = _key(re.sub(r"\(.*$", "", raw))  # 'CT(Computed ...' -> 'ct'
    return _MODALITY_ALIASES.get(stripped, raw.strip() or "unknown")


def canonical_question_type(raw: str) -> str:
    key = _key(raw)
    for name in QUESTION_TYPES:
        if key == name.lower():
            return name
    return _QUESTION_TYPE_ALIASES.get(key, raw.strip())


def slug(name: str) -> str:
    """A file-name-safe form of a domain name: 'X-Ray' -> 'x-ray', 'Disease Diagnosis' -> 'disease-diagnosis'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
