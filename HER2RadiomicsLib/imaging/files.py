"""Files written safely and the files an image depends on: companion files (sidecars, detached
pixel data), image writing, atomic text and byte writes (temporary file + rename, umask kept).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:            # the annotation only; write_image imports it when it runs
    import SimpleITK as sitk


DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
HEADER_SUFFIXES = {".nrrd", ".nhdr", ".nii", ".mha", ".mhd", ".nii.gz", ".gz"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def companion_files(path) -> list:
    """Files an image's reading also depends on: its spacing sidecars (``<image>.json``,
    ``<stem>.json``) and, for a MetaImage (``.mhd``) or detached NRRD (``.nhdr``) header, the
    data file(s) it names. Those that exist, absolute."""
    path = Path(path)
    out = []
    for cand in (Path(str(path) + ".json"), path.with_suffix(".json")):
        if cand != path and cand.is_file():
            out.append(cand)
    suffix = _suffix(path)
    if suffix in (".mhd", ".nhdr"):
        key = "elementdatafile" if suffix == ".mhd" else "data file"
        try:
            with open(path, "rb") as fh:
                head = fh.read(1 << 20).decode("latin-1")
        except OSError:
            head = ""
        for line in head.splitlines():
            k, sep, v = line.partition("=" if suffix == ".mhd" else ":")
            if sep and k.strip().lower() in (key, "datafile"):
                name = v.strip()
                if name and name.upper() not in ("LOCAL", "LIST") and "%" not in name:
                    cand = Path(name) if Path(name).is_absolute() else path.parent / name
                    if cand.is_file():
                        out.append(cand)
                break
    return out


def _real_target(path) -> Path:
    """Where a write to ``path`` lands: a symbolic link is written through to its target (the
    link stays a link), never replaced by a file."""
    return Path(os.path.realpath(os.fspath(path)))


def write_image(img: sitk.Image, path, compress: bool = True) -> Path:
    """Write an image atomically (temporary file in the same folder, then rename)."""
    # imported here: every command writes text through this module, and SimpleITK's import
    # (0.2 s) is only for the commands that write images
    import SimpleITK as sitk
    path = Path(path)
    target = _real_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(path) or ".nrrd"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp, compress)
        # mkstemp creates 0600; give the result the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except RuntimeError as exc:   # ITK reports a full disk or a lost folder this way
        detail = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else "write failed"
        raise InputError(f"{path}: cannot write the image ({detail})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> Path:
    """Write text atomically (temporary file then rename): readers never see half a file."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write bytes atomically (temporary file then rename); a symbolic link is written through
    to its target. A failure (disk full, permission) names the file and leaves it as it was.

    Raises
    ------
    InputError
        The file cannot be written.
    """
    path = Path(path)
    target = _real_target(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp creates 0600; give the result the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc}); the previous file, if "
                         "any, is unchanged") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return path


