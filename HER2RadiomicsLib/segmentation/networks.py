"""Compact 2D U-Net for lesion segmentation in breast ultrasound (plain torch, no torchvision).

The architecture is deliberately small (about 1.9 M parameters at ``base_channels=16``) so that
CPU inference of one letterboxed 192 x 192 image takes well under 0.1 s on two cores and the
weights file stays far below 10 MB.

Weights files are read only by :func:`load_weights`: ``torch.load(weights_only=True)``, which
rebuilds tensors, numbers, strings, lists, tuples and dicts and refuses every other class or
function a pickle names, so no code in a weights file ever runs.  A refused, empty, truncated or
corrupt file is a one-line :class:`~HER2RadiomicsLib.errors.ModelError` naming the file.

Example
-------
>>> from HER2RadiomicsLib.segmentation.networks import build_network  # doctest: +SKIP
>>> net = build_network({"name": "unet2d", "base_channels": 16, "depth": 4})  # doctest: +SKIP
"""
from __future__ import annotations

import io
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

from ..errors import ModelError

ARCHITECTURE_NAME = "unet2d"
ARCHITECTURE_VERSION = 1


def _torch():
    # torch is imported lazily so that the rest of the library works without it.
    import torch
    return torch


def build_network(arch: dict):
    """Instantiate the network described by an architecture dictionary.

    Parameters
    ----------
    arch : dict
        ``{"name": "unet2d", "version": 1, "base_channels": int, "depth": int}``.

    Returns
    -------
    torch.nn.Module
        A network mapping ``(N, 1, H, W)`` normalised grey images to ``(N, 1, H, W)`` logits;
        ``H`` and ``W`` must be divisible by ``2 ** depth``.

    Raises
    ------
    ValueError
        If the name or version is not one this library can build.
    """
    name = arch.get("name")
    version = int(arch.get("version", ARCHITECTURE_VERSION))
    if name != ARCHITECTURE_NAME or version != ARCHITECTURE_VERSION:
        raise ValueError(
            f"unsupported network architecture {name!r} v{version}; this library builds "
            f"{ARCHITECTURE_NAME!r} v{ARCHITECTURE_VERSION}")
    return _make_unet(int(arch.get("base_channels", 16)), int(arch.get("depth", 4)))


def _make_unet(base_channels: int, depth: int):
    torch = _torch()
    nn = torch.nn

    class ConvBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True))

        def forward(self, x):
            return self.body(x)

    class UNet2D(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [base_channels * 2 ** i for i in range(depth + 1)]
            self.depth = depth
            self.enc = nn.ModuleList([ConvBlock(1, chans[0])] + [
                ConvBlock(chans[i], chans[i + 1]) for i in range(depth)])
            self.pool = nn.MaxPool2d(2)
            self.up = nn.ModuleList([
                nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(depth)])
            self.dec = nn.ModuleList([ConvBlock(2 * chans[i], chans[i]) for i in range(depth)])
            self.head = nn.Conv2d(chans[0], 1, 1)

        def forward(self, x):
            skips = []
            for i, block in enumerate(self.enc):
                x = block(x if i == 0 else self.pool(x))
                skips.append(x)
            x = skips.pop()
            for i in reversed(range(self.depth)):
                x = self.up[i](x)
                x = self.dec[i](torch.cat([x, skips[i]], dim=1))
            return self.head(x)

    return UNet2D()


NOT_PLAIN = ("not a plain weights file (it contains code or objects other than tensors and "
             "numbers); refused")
# Pickle opcodes that import or call something.  torch.save writes protocol 2 and names only
# torch's tensor-rebuild functions, OrderedDict and a few builtins with GLOBAL; anything else
# named, or any of the other opcodes, is code.  Used only to word the refusal: the safety
# itself is torch's restricted unpickler, which never runs what it does not allow.
_CODE_OPCODES = {"INST", "OBJ", "STACK_GLOBAL", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"}
_DATA_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "collections.Counter",
                         "_codecs.encode", "builtins.set", "builtins.bytearray",
                         "builtins.complex", "__builtin__.set")
# How torch's restricted unpickler words "this pickle names something I will not call".
_REFUSALS = ("Unsupported global", "is blocked", "Trying to call reduce", "Can only create",
             "Can only build", "must be imported to load")
# A torch pickle is small (tensor data lives in separate zip members); the scan that words an
# error never reads more than this.
_SCAN_BYTES = 64 << 20


def _names_code(pickle_bytes: bytes) -> bool:
    """True if ``pickle_bytes`` is a well-formed pickle that imports or calls anything beyond
    torch's tensor rebuilding (a broken stream is corruption, whatever its bytes spell)."""
    code = False
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(pickle_bytes)):
            code = code or op.name in _CODE_OPCODES or (
                op.name == "GLOBAL"
                and not str(arg).replace(" ", ".").startswith(_DATA_GLOBAL_PREFIXES))
            if op.name == "STOP":
                return code
    except Exception:  # noqa: BLE001 - not a pickle: genops raises several types
        pass
    return False


def _pickle_of(path: Path) -> bytes:
    """The pickle stream of a weights file: ``*/data.pkl`` of a zip, else the raw file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                return zf.open(name).read(_SCAN_BYTES) if name else b""
        with open(path, "rb") as fh:
            return fh.read(_SCAN_BYTES)
    except Exception:  # noqa: BLE001 - corrupt zip: nothing to scan
        return b""


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch >= 1.6) or a pickle of protocol 2+ (older torch.save)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK") or head[:1] == b"\x80"


def load_weights(path, map_location="cpu"):
    """Read a weights file as pure data; nothing in it is ever executed.

    Parameters
    ----------
    path : str or Path
        A file written by ``torch.save``: an exported ``state_dict``, a ``best.pt`` or a
        ``last.pt`` training checkpoint.
    map_location : str
        Where tensors are placed (``"cpu"`` by default).

    Returns
    -------
    object
        Tensors, numbers, strings, lists, tuples and dicts (as ``torch.load(weights_only=True)``
        rebuilds them).

    Raises
    ------
    ModelError
        One line naming the file: missing, empty, truncated or corrupt, or not a plain weights
        file (its pickle names a function or class other than torch's tensor rebuilding, e.g. a
        payload that would run ``os.system``).
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found" if not path.exists()
                         else f"{path}: is not a file; give a weights file (.pt)")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file, not a weights file")
    try:
        with warnings.catch_warnings():
            # torch warns (on stderr) about unusual pickle protocols before it refuses them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        refused = isinstance(exc, pickle.UnpicklingError) and any(
            m in str(exc) for m in _REFUSALS)
        if refused or _names_code(_pickle_of(path)):
            raise ModelError(f"{path}: {NOT_PLAIN}") from None
        if not _looks_like_torch_file(path):
            raise ModelError(f"{path}: not a weights file (neither a torch zip archive nor a "
                             "pickle)") from None
        if isinstance(exc, pickle.UnpicklingError):
            # what torch's restricted unpickler met is one line of its long message
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "Unsupported" in ln or "Can only" in ln),
                          lines[-1] if lines else "")
        else:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # torch prefixes C++ assertion sites and appends paragraphs of advice
        detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", detail)
        detail = detail.split(". ")[0][:120]
        raise ModelError(f"{path}: cannot be read as a weights file: truncated, corrupt or not "
                         f"written by torch.save ({type(exc).__name__}: {detail})") from None


def state_dict_from(obj, path) -> dict:
    """The network weights in a loaded weights file: an exported ``state_dict`` (name ->
    tensor) or a training checkpoint's ``"model"`` entry.

    Raises
    ------
    ModelError
        Anything else, in one line naming ``path``.
    """
    torch = _torch()
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in obj.items()):
        return obj
    raise ModelError(f"{path}: not segmentation weights (expected an exported state_dict of "
                     f"tensors, e.g. model.pt, or a best.pt checkpoint with 'model'; got "
                     f"{_describe(obj)})")


def _describe(obj) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        return f"a dict with keys {keys}{', ...' if len(obj) > 5 else ''}" if obj \
            else "an empty dict"
    return f"a {type(obj).__name__}"
