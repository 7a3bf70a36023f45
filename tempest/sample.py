"""The sample INI file and systemd unit shipped in the package, and writing them out (--init).

They are conf/tempest.ini and conf/tempestd.service themselves, not copies: tempest/conf is a
symbolic link to the top-level conf/, listed in package_data, so a wheel carries the very sample
that the tests load. Writing them into a directory changes only what depends on where they land:
the INI file's paths relative to conf/ (``run_dir = ../run``, the checkout's run/) become relative
to the directory (``run_dir = run``), and the unit's /opt/tempest paths become the directory's and
this installation's tempestd.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import sysconfig
from importlib import resources

INI = "tempest.ini"
UNIT = "tempestd.service"

# a value starting with ../ : a path relative to conf/, meaning the checkout's top level
_PARENT_PATH = re.compile(r"^(\s*\w+\s*=\s*)\.\./", re.MULTILINE)


def read(name: str) -> str:
    return resources.files("tempest").joinpath("conf", name).read_text(encoding="utf-8")


def ini_for_directory(text: str) -> str:
    """The sample INI text with its ``../X`` paths made ``X``, for an INI file at the top of DIR."""
    return _PARENT_PATH.sub(r"\1", text)


def unit_for_directory(text: str, directory: str, tempestd: str) -> str:
    """The sample unit running ``tempestd`` on DIR/tempest.ini, with DIR as its working directory."""
    text = text.replace("/opt/tempest/.venv/bin/tempestd", tempestd)
    text = text.replace("/opt/tempest/conf/tempest.ini", os.path.join(directory, INI))
    text = text.replace("conf/tempestd.service", os.path.join(directory, UNIT))
    return text.replace("/opt/tempest", directory)


def tempestd_path() -> str:
    """This installation's tempestd console script (``python -m tempest`` if it has none)."""
    script = os.path.join(sysconfig.get_path("scripts"), "tempestd")
    return script if os.access(script, os.X_OK) else f"{sys.executable} -m tempest"


def write(directory: str) -> list[str]:
    """Write DIR/tempest.ini and DIR/tempestd.service; return their paths.

    Raises:
        FileExistsError: one of them exists (nothing is written then).
        OSError: the directory cannot be made or written to.
    """
    directory = os.path.abspath(directory)
    files = {os.path.join(directory, INI): ini_for_directory(read(INI)),
             os.path.join(directory, UNIT): unit_for_directory(read(UNIT), directory, tempestd_path())}
    for path in files:
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", path)
    os.makedirs(directory, exist_ok=True)
    for path, text in files.items():
        with open(path, "x", encoding="utf-8") as handle:  # "x": never overwrite, even in a race
            handle.write(text)
    return list(files)
