"""Fault injection (a preload of tests/cli_runner.py): permissions as a user who is not root sees them.

Root may write into any folder, so a read-only output folder cannot be shown to root for real. As root, `os.access`
is made to answer from the owner's permission bits, as it does for the folder's owner; for anyone else it is left
alone and the real permissions apply.
"""

import os
import stat

_access = os.access


def _as_owner(path, mode, *args, **kwargs):
    if not _access(path, os.F_OK):
        return False
    bits = os.stat(path).st_mode
    wanted = [(os.R_OK, stat.S_IRUSR), (os.W_OK, stat.S_IWUSR), (os.X_OK, stat.S_IXUSR)]
    return all(bits & owner for flag, owner in wanted if mode & flag)


if os.geteuid() == 0:
    os.access = _as_owner
