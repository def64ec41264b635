"""Fault injection (a preload of tests/cli_runner.py): the disk is full when the final model is written.

Patched at the library boundary, where transformers hands the weights to safetensors: writing into output_dir's
model.tmp/ (the final save) fails with ENOSPC, as on a full disk; checkpoints are written as usual.
"""

import errno
import os

import transformers.modeling_utils

_write = transformers.modeling_utils.safe_save_file


def _full_disk(tensors, filename, *args, **kwargs):
    if f"{os.sep}model.tmp{os.sep}" in str(filename):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
    return _write(tensors, filename, *args, **kwargs)


transformers.modeling_utils.safe_save_file = _full_disk
