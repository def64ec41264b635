"""The builder of the bundled "omnimedvqa_mini" set, run by tools/build_bundled_data.py (see its docstring).

encode (PNG/JPEG, windows, downscale) · questions (OmniMedVQA strings, templates, records) · sources (package files,
`Picture` -> `Item`) · real_dicom, real_files, synthetic (the images, as data) · texts (NOTICE, README, SOURCES.json)
· assemble (records, the build, the byte-for-byte comparison).
"""

from .assemble import build, compare_trees, environment_note

__all__ = ["build", "compare_trees", "environment_note"]
