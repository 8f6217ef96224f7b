"""Training of the lesion-segmentation U-Net (``her2radiomics train-segmenter``).

Data are split by patient, never by image (BUS-BRA has two views of most lesions; an image split
would leak them across train and validation).  Augmentation is done on whole batches with torch
(affine warps, flips, gain, gamma, multiplicative speckle, blur), so the CPU data path stays
cheap.  Every epoch writes a resumable checkpoint; the best validation Dice is kept separately.

Checkpoints are pure data (tensors, numbers, strings, lists, dicts: the optimizer, scheduler and
both random generators' states included) and every weights file is read with
``torch.load(weights_only=True)`` (:func:`.networks.load_weights`): ``--init-from`` and a
``last.pt`` found in the run folder can never run code.  :func:`read_start_files` checks both
(pure data, the right kind of file, fitting the network) without loading any image, and
:func:`train` calls it before it writes anything.

Images and masks are read through the library's readers (:func:`check_pairs` checks every
file's existence and the pixel cap from its header before any pixel is decoded; manifests go
through :func:`..extraction.batch.read_manifest`), so a bad input is one line naming its file,
before training starts.

Example
-------
>>> from HER2RadiomicsLib.segmentation import training  # doctest: +SKIP
>>> ds = training.load_busbra("../shared/datasets/busbra", size=192)  # doctest: +SKIP
>>> training.train(train_ds, val_ds, "runs/seg",
...                training.TrainConfig(epochs=60))  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm.auto import tqdm

from ..errors import InputError, ModelError, one_line
from ..extraction.batch import read_manifest
from ..imaging.io import _check_size, _read_sitk
from .networks import build_network, load_weights, state_dict_from
from .preprocess import Letterbox, normalise_intensity

# torch is imported inside the functions that train or save: it is optional (the [torch]
# extra) and costs seconds, and the pair checks serve callers without it

log = logging.getLogger(__name__)

DEFAULT_SIZE = 160
DEFAULT_ARCH = {"name": "unet2d", "version": 1, "base_channels": 12, "depth": 4}
# Fixed, documented validation split of BUS-BRA: shuffle the sorted patient IDs with this seed
# and hold out the last 20 %.  Changing it changes every reported validation number.
SPLIT_SEED = 20261121
VAL_FRACTION = 0.2


@dataclass
class SegDataset:
    """Letterboxed images/masks held in memory (uint8) plus per-image identifiers."""

    images: np.ndarray                # (N, S, S) uint8, normalised grey * 255
    masks: np.ndarray                 # (N, S, S) uint8 {0, 1}
    ids: list = field(default_factory=list)
    patients: list = field(default_factory=list)
    size: int = DEFAULT_SIZE

    def subset(self, idx) -> "SegDataset":
        idx = np.asarray(idx, dtype=int)
        return SegDataset(self.images[idx], self.masks[idx], [self.ids[i] for i in idx],
                          [self.patients[i] for i in idx], self.size)

    def __len__(self):
        return len(self.ids)


def check_pairs(pairs) -> None:
    """Check every image and mask of ``pairs`` exists and is within the pixel cap, from its
    header alone, before any pixel of any of them is decoded (one bad file among thousands is
    refused at once, not after the others were loaded).

    Raises
    ------
    InputError
        One line naming the file: not found, or larger than the cap
        (:func:`..imaging.io.max_pixels`).
    """
    for pair in pairs:
        for path in pair[:2]:
            path = Path(path)
            if not path.is_file():
                why = "a folder, not an image file" if path.is_dir() else "file not found"
                raise InputError(f"{path}: {why}")
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                continue        # unreadable: the full read says so, in one line
            _check_size(path, reader.GetSize())


def _read_grey(path) -> np.ndarray:
    """A 2D grey array of an image file, read through the library's header checks (pixel cap
    before decoding, one-line errors naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    img = _read_sitk(path)
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    if img.GetNumberOfComponentsPerPixel() >= 3:
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif img.GetNumberOfComponentsPerPixel() == 2:     # grey + alpha
        arr = arr[..., 0]
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InputError(f"{path}: not a 2D image (pixel array of shape {arr.shape}); "
                         "train-segmenter needs one frame per file")
    return arr


def _prepare(img: np.ndarray, mask: np.ndarray, size: int):
    lb = Letterbox(img.shape[0], img.shape[1], size)
    x = lb.forward(normalise_intensity(img))
    y = lb.forward((mask > 0).astype(np.float32)) >= 0.5
    return (x * 255 + 0.5).astype(np.uint8), y.astype(np.uint8)


def load_pairs(pairs, size: int = DEFAULT_SIZE, progress: bool = True) -> SegDataset:
    """Load ``(image_path, mask_path, case_id, patient_id)`` tuples into a :class:`SegDataset`."""
    pairs = list(pairs)
    xs = np.zeros((len(pairs), size, size), np.uint8)
    ys = np.zeros_like(xs)
    ids, pats = [], []
    check_pairs(pairs)
    for i, (ip, mp, cid, pid) in enumerate(tqdm(pairs, desc="loading", disable=not progress)):
        img, mask = _read_grey(ip), _read_grey(mp)
        if img.shape != mask.shape:
            raise InputError(f"{mp}: mask of {mask.shape[1]} x {mask.shape[0]} px does not "
                             f"match its image {ip} ({img.shape[1]} x {img.shape[0]} px)")
        xs[i], ys[i] = _prepare(img, mask, size)
        ids.append(str(cid))
        pats.append(str(pid))
    return SegDataset(xs, ys, ids, pats, size)


def busbra_pairs(root):
    """Yield BUS-BRA ``(image, mask, ID, Case)`` tuples from its ``bus_data.csv``.

    Raises
    ------
    InputError
        One line naming ``bus_data.csv``: missing, unreadable, or without an ``ID`` or ``Case``
        column.
    """
    table = Path(root) / "bus_data.csv"
    rows = _read_csv(table, ("ID", "Case"), "BUS-BRA table")
    for row in rows:
        stem = row["ID"]
        yield (table.parent / "images" / f"{stem}.png",
               table.parent / "masks" / f"{stem.replace('bus_', 'mask_')}.png", stem, row["Case"])


def _read_csv(path: Path, need, what: str) -> list:
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            cols = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the {what} ({one_line(exc)})") from None
    missing = [c for c in need if c not in cols]
    if missing:
        raise InputError(f"{path}: {what} lacks column(s) {missing} (has {cols})")
    if not rows:
        raise InputError(f"{path}: {what} has no rows")
    bad = next((i + 2 for i, r in enumerate(rows) if not all((r.get(c) or "").strip()
                                                             for c in need)), None)
    if bad:
        raise InputError(f"{path}: row {bad}: empty {' or '.join(need)}")
    return rows


def manifest_pairs(manifest):
    """Pairs from a CSV with columns ``case_id,image,mask`` (and optional ``patient_id``).

    Read with the library's manifest checks (:func:`..extraction.batch.read_manifest`):
    relative paths are resolved against the manifest's folder; a missing column or file, an
    empty or duplicate case ID is refused, one line per problem naming the manifest.
    """
    return [(Path(r["image"]), Path(r["mask"]), r["case_id"], r.get("patient_id") or r["case_id"])
            for r in read_manifest(manifest)]


def folder_pairs(image_dir, mask_dir):
    """Pair ``image_dir/X.ext`` with the mask of the same stem (or ``mask_`` for ``bus_``).

    Hidden files and JSON spacing sidecars (``X.png.json``) are not images and are skipped.

    Raises
    ------
    InputError
        A folder that does not exist or holds no image, or an image without a mask.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    for d, opt in ((image_dir, "--images"), (mask_dir, "--masks")):
        if not d.is_dir():
            raise InputError(f"{d}: {opt} folder not found")

    def files(d):
        return [p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
                and p.suffix.lower() != ".json"]
    masks = {}
    for p in sorted(files(mask_dir)):
        masks.setdefault(p.stem, p)
    out = []
    for ip in sorted(files(image_dir)):
        stem = ip.stem
        mp = masks.get(stem) or masks.get(stem.replace("bus_", "mask_"))
        if mp is None:
            raise InputError(f"{ip}: no mask with the same name in {mask_dir}")
        out.append((ip, mp, stem, stem))
    if not out:
        raise InputError(f"{image_dir}: no image files in the --images folder")
    return out


def patient_split(patients, val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED):
    """Split image indices by patient: returns ``(train_idx, val_idx)``.

    The sorted unique patient IDs are shuffled with ``seed``; the last ``val_fraction`` of them
    (rounded) are validation patients.  All images of a patient fall on one side.
    """
    uniq = sorted(set(patients), key=lambda s: (len(s), s))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n_val = int(round(len(uniq) * val_fraction))
    val_p = {uniq[i] for i in order[len(uniq) - n_val:]}
    val = [i for i, p in enumerate(patients) if p in val_p]
    train = [i for i, p in enumerate(patients) if p not in val_p]
    return np.array(train, int), np.array(val, int)


def augment(x, y, generator):
    """Ultrasound-plausible augmentation of a batch ``x``, ``y`` of shape (N, 1, S, S) in [0, 1].

    Horizontal flips (probe orientation), rotation +-12 deg, scale 0.8-1.2, shifts +-10 %; gain
    0.75-1.3, gamma 0.7-1.5, multiplicative speckle (Rayleigh-like, smoothed), Gaussian blur.
    No vertical flips: depth (attenuation, shadowing) has a direction in ultrasound.
    """
    import torch
    import torch.nn.functional as F
    n = x.shape[0]
    dev = x.device

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(n, device=dev, generator=generator)

    ang = u(-12, 12) * math.pi / 180
    sc = u(0.8, 1.2)
    flip = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    tx, ty = u(-0.1, 0.1), u(-0.1, 0.1)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                         torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = (F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
         >= 0.5).float()
    gain = u(0.75, 1.3).view(n, 1, 1, 1)
    gamma = u(0.7, 1.5).view(n, 1, 1, 1)
    x = (x.clamp(0, 1) ** gamma) * gain
    # speckle: multiplicative noise with a short correlation length, strength 0-25 %
    noise = torch.randn(x.shape, device=dev, generator=generator)
    noise = F.avg_pool2d(noise, 3, stride=1, padding=1) * 3
    x = x * (1 + u(0, 0.25).view(n, 1, 1, 1) * noise)
    # blur on half of the batch (lower-resolution scanners)
    k = torch.tensor([1., 4., 6., 4., 1.], device=dev)
    k = (k[:, None] * k[None, :]) / 256
    blurred = F.conv2d(x, k.view(1, 1, 5, 5), padding=2)
    pick = (torch.rand(n, device=dev, generator=generator) < 0.5).view(n, 1, 1, 1)
    x = torch.where(pick, blurred, x)
    return x.clamp(0, 1.5), y


def dice_loss(logits, target, eps: float = 1.0):
    import torch
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    den = p.sum((1, 2, 3)) + target.sum((1, 2, 3))
    return (1 - (2 * inter + eps) / (den + eps)).mean()


def batch_dice(logits, target) -> np.ndarray:
    """Per-image hard Dice at threshold 0.5; 1.0 when both prediction and target are empty."""
    pred = (logits > 0).float()
    inter = (pred * target).sum((1, 2, 3))
    den = pred.sum((1, 2, 3)) + target.sum((1, 2, 3))
    d = (2 * inter / den.clamp(min=1)).cpu().numpy()
    d[(den == 0).cpu().numpy()] = 1.0
    return d


RESUME_KEYS = ("model", "opt", "sched", "state", "gen", "rng")


def read_start_files(out_dir, arch: dict | None = None, init_from=None, resume: bool = True,
                     device: str = "cpu"):
    """Read and check what a training run starts from, before any image is loaded.

    Parameters
    ----------
    out_dir : path
        The run folder; its ``last.pt`` is resumed from when ``resume``.
    arch : dict, optional
        The network to be trained (default :data:`DEFAULT_ARCH`); both files must fit it.
    init_from : path, optional
        Fine-tuning weights: a ``best.pt`` checkpoint or an exported ``state_dict``
        (``model.pt``).

    Returns
    -------
    (dict or None, dict or None)
        The ``init_from`` state_dict and the ``last.pt`` checkpoint (None when not used).

    Raises
    ------
    ModelError
        One line naming the file: not pure data (refused unread), empty/truncated/corrupt, not
        weights or not a checkpoint of this command, or made for a different network.
    """
    arch = dict(arch or DEFAULT_ARCH)
    init_state = ck = None
    if init_from is not None:
        init_state = state_dict_from(load_weights(init_from, map_location=device), init_from)
        _check_fits(build_network(arch), init_state, init_from, arch)
    last = Path(out_dir) / "last.pt"
    if resume and last.exists():
        ck = load_weights(last, map_location=device)
        missing = [k for k in RESUME_KEYS if not isinstance(ck, dict) or k not in ck]
        if missing:
            raise ModelError(f"{last}: not a train-segmenter checkpoint (no {', '.join(missing)})"
                             "; use --no-resume or another --out folder")
        if ck.get("arch", arch) != arch:
            raise ModelError(f"{last}: checkpoint of another network ({ck.get('arch')}, this run "
                             f"{arch}); use --no-resume or another --out folder")
        _check_fits(build_network(arch), state_dict_from(ck, last), last, arch)
    return init_state, ck


def _check_fits(net, state, path, arch):
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:   # missing/unexpected keys, shapes
        first = str(exc).strip().splitlines()[0][:160]
        raise ModelError(f"{path}: weights do not fit the network being trained "
                         f"(base channels {arch.get('base_channels')}, depth "
                         f"{arch.get('depth')}): {first}") from None


@dataclass
class TrainConfig:
    """How the U-Net is trained (the ``train-segmenter`` command's flags).

    Attributes
    ----------
    arch : dict, optional
        Network architecture (default :data:`DEFAULT_ARCH`).
    epochs : int
        Most epochs to run (the one-cycle / cosine schedule spans them).
    batch_size : int
        Images per optimiser step.
    lr : float
        Peak (one-cycle) or starting (cosine) learning rate of AdamW.
    patience : int
        Stop after this many epochs without a better validation Dice.
    seed : int
        Seed of the weights, the augmentation and the batch order.
    device : str
        ``"cpu"`` or ``"cuda[:n]"`` (mixed precision on CUDA).
    threads : int, optional
        torch CPU threads (default: torch's own).
    max_minutes : float, optional
        Stop cleanly (checkpoint written) after this wall time; rerun to continue.
    resume : bool
        Continue from ``out_dir/last.pt`` when present.
    progress : bool
        Show a progress bar and one line per epoch.
    init_from : path, optional
        Start from these weights (a ``best.pt`` of an earlier run, or an exported
        ``model.pt``): fine-tuning.  Read as pure data, see :func:`read_start_files`.
    schedule : {"onecycle", "cosine"}
        One-cycle warm-up/anneal for training from scratch; cosine decay from ``lr`` for
        fine-tuning (e.g. to finish the annealing of a run stopped by its time limit).
    """
    arch: dict | None = None
    epochs: int = 60
    batch_size: int = 16
    lr: float = 2e-3
    patience: int = 12
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    max_minutes: float | None = None
    resume: bool = True
    progress: bool = True
    init_from: object = None
    schedule: str = "onecycle"


def train(train_ds: SegDataset, val_ds: SegDataset, out_dir,
          config: TrainConfig | None = None) -> dict:
    """Train the U-Net; resumable, early-stopped on validation Dice.

    Parameters
    ----------
    train_ds, val_ds : SegDataset
        Letterboxed data (see :func:`load_pairs`), already split by patient.
    out_dir : path
        Receives ``last.pt`` (full training state, rewritten atomically every epoch),
        ``best.pt`` (weights with the best validation Dice) and ``history.jsonl``.
    config : TrainConfig, optional
        Epochs, batch size, learning rate, schedule, device, time limit, start weights
        (defaults: :class:`TrainConfig`).

    Returns
    -------
    dict
        ``{"best_dice": float, "best_epoch": int, "epochs_run": int, "stopped": str}``.

    Raises
    ------
    ModelError
        ``config.init_from`` or ``out_dir/last.pt`` is not a usable weights file (see
        :func:`read_start_files`); checked before anything is written.
    """
    import torch

    c = config or TrainConfig()
    arch, epochs, batch_size, lr, patience = c.arch, c.epochs, c.batch_size, c.lr, c.patience
    seed, device, threads, max_minutes = c.seed, c.device, c.threads, c.max_minutes
    resume, progress, init_from, schedule = c.resume, c.progress, c.init_from, c.schedule
    arch = dict(arch or DEFAULT_ARCH)
    init_state, ck = read_start_files(out_dir, arch, init_from, resume, device)
    if threads:
        torch.set_num_threads(int(threads))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = build_network(arch).to(device)
    if init_state is not None:
        net.load_state_dict(init_state)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, math.ceil(len(train_ds) / batch_size))
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
                                                    total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.1)
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    state = {"epoch": 0, "best_dice": -1.0, "best_epoch": -1, "bad_epochs": 0}
    last = out_dir / "last.pt"
    if ck is not None:
        try:
            net.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            state = {k: ck["state"][k] for k in state}
            if not all(type(v) in (int, float) for v in state.values()):
                raise ValueError(f"state {state} holds values that are not numbers")
            gen.set_state(ck["gen"].cpu())
            rng.bit_generator.state = ck["rng"]
            if ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ModelError(f"{last}: training checkpoint does not fit this run ({first}); "
                             "use --no-resume or another --out folder") from None
        log.info("resumed from %s at epoch %d", last, state["epoch"])

    xt = torch.from_numpy(train_ds.images)
    yt = torch.from_numpy(train_ds.masks)
    xv = torch.from_numpy(val_ds.images).float().div(255).unsqueeze(1)
    yv = torch.from_numpy(val_ds.masks).float().unsqueeze(1)
    bce = torch.nn.BCEWithLogitsLoss()
    t0 = time.time()
    stopped = "epochs"
    while state["epoch"] < epochs:
        net.train()
        order = rng.permutation(len(train_ds))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {state['epoch'] + 1}/{epochs}",
                   disable=not progress, leave=False)
        for s in bar:
            idx = torch.from_numpy(order[s * batch_size:(s + 1) * batch_size])
            xb = xt[idx].float().div(255).unsqueeze(1).to(device)
            yb = yt[idx].float().unsqueeze(1).to(device)
            xb, yb = augment(xb, yb, gen)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = net(xb)
                loss = bce(logits.float(), yb) + dice_loss(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        dices = []
        net.eval()
        with torch.no_grad():
            for s in range(0, len(val_ds), 32):
                dices.append(batch_dice(net(xv[s:s + 32].to(device)), yv[s:s + 32].to(device)))
        vd = float(np.concatenate(dices).mean()) if dices else float("nan")
        state["epoch"] += 1
        improved = vd > state["best_dice"]
        if improved:
            state.update(best_dice=vd, best_epoch=state["epoch"], bad_epochs=0)
            _atomic_save({"arch": arch, "model": net.state_dict(), "epoch": state["epoch"],
                          "val_dice": vd, "size": train_ds.size}, out_dir / "best.pt")
        else:
            state["bad_epochs"] += 1
        _atomic_save({"model": net.state_dict(), "opt": opt.state_dict(),
                      "sched": sched.state_dict(), "state": _plain(state),
                      "gen": gen.get_state(), "rng": _plain(rng.bit_generator.state),
                      "scaler": scaler.state_dict(), "arch": arch}, last)
        rec = {"epoch": state["epoch"], "loss": float(np.mean(losses)), "val_dice": vd,
               "lr": sched.get_last_lr()[0], "seconds": round(time.time() - t0, 1)}
        with open(out_dir / "history.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log.info("epoch %(epoch)d loss %(loss).4f val_dice %(val_dice).4f", rec)
        if progress:
            print(f"epoch {rec['epoch']:3d}  loss {rec['loss']:.4f}  val Dice {vd:.4f}"
                  f"{'  *' if improved else ''}", flush=True)
        if state["bad_epochs"] >= patience:
            stopped = "early-stopping"
            break
        if max_minutes and (time.time() - t0) / 60 > max_minutes:
            stopped = "time-limit"
            break
    return {"best_dice": state["best_dice"], "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"], "stopped": stopped}


def _plain(obj):
    """``obj`` with numpy scalars turned into Python numbers (dicts, lists, tuples recursed)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _check_plain(obj, where="checkpoint"):
    """Refuse (as a bug) to save anything ``torch.load(weights_only=True)`` would not read
    back: only tensors, numbers, strings, None, lists, tuples and str/int-keyed dicts."""
    import torch
    if isinstance(obj, (torch.Tensor, bool, int, float, str, type(None))):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a string or integer")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where}: {type(obj).__name__} is not plain data; convert it before saving")


def _atomic_save(obj, path: Path):
    """Save to ``<path>.tmp`` and rename; a save cut short (Ctrl-C, full disk) removes the
    temporary file and leaves ``path`` as it was."""
    import torch
    _check_plain(obj)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
