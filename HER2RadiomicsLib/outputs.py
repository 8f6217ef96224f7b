"""Outputs that are never destroyed: up-front checks, one run per output, staged swaps.

Rules every command follows:

* an output path is checked before any work starts (a folder where a file is expected, a
  parent that is a file, an unwritable folder, an output that is one of the command's inputs,
  symbolic links followed: one line, exit 2);
* a folder output belongs to the command that made it: a non-empty folder that this command did
  not make (no :data:`MARKER` naming it) is refused, never emptied, and a staged swap replaces
  only the files the command itself wrote there (other files in the folder are left alone);
* two runs on the same output take a lock (``<out>.lock`` on the resolved path); the second one
  is refused and told who holds it (process id, host, start time, command); a file of that name
  that is not one of our locks is never overwritten or deleted;
* an output is replaced only by a complete, successful result: results are written aside
  (``<out>.parts/``, a staging folder) and swapped into place at the end as a set (Ctrl-C held
  back during the swap; a swap cut short by a crash is finished by the next run), so an
  interrupted or failed run leaves the previous outputs intact and never a mix of two runs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from . import __version__
from .errors import InputError
from .imaging.files import atomic_write_text

#: names a folder output as made by a command (and lists the files that command wrote there)
MARKER = ".her2radiomics-output.json"
#: a swap in progress: the list of files still to move from the staging folder into place
JOURNAL = ".her2radiomics-swap.json"
_LOCK_TAG = "her2radiomics lock: "
_STAGE_PREFIX = ".staging-"


def resolved(path) -> Path:
    """The path with symbolic links followed (also for a path that does not exist yet)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def check_output(path, kind: str = "file", command: str | None = None) -> Path:
    """Refuse an output path that cannot be written, before any work.

    Parameters
    ----------
    path : path
    kind : {"file", "dir"}
    command : str, optional
        For a folder: the command that will write it; a non-empty folder made by something
        else is refused (see :func:`check_folder_owner`).

    Raises
    ------
    InputError
        The path is a folder (for a file), a file (for a folder), under a file, in a folder
        this user cannot write, or a folder that belongs to something else.
    """
    p = Path(path)
    r = resolved(p)
    if kind == "file" and r.is_dir():
        raise InputError(f"{p}: is a folder; give a file name for the output")
    if kind == "dir" and r.exists() and not r.is_dir():
        raise InputError(f"{p}: exists and is not a folder")
    if r.exists() and not os.access(r, os.W_OK):
        raise InputError(f"{p}: not writable")
    anc = r.parent          # the nearest folder that exists
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"{p}: cannot be created: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"{p}: cannot write in {anc} (permission denied)")
    if kind == "dir" and command:
        check_folder_owner(p, command)
    return p


# -- folder ownership --------------------------------------------------------------------------

def read_marker(folder) -> dict | None:
    """The ownership record of a folder output, or None when it has none (or it is unreadable).

    Its file list keeps only plain relative names inside the folder: the record is a file
    anyone can edit, and a rerun removes the files it lists.
    """
    f = resolved(folder)
    try:
        doc = json.loads((f / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("command"), str):
        return None
    files = doc.get("files") if isinstance(doc.get("files"), list) else []
    try:
        base = os.path.realpath(f)      # once, not per listed file (~1,000 in a demo folder)
    except OSError:
        base = None                     # each file is then checked (and refused) on its own
    doc["files"] = [r for r in files if _inside(f, r, base) is not None]
    return doc


def _entries(folder: Path) -> list:
    """What the folder holds besides our own marker (a journal counts: a folder holding only
    one is not 'empty', it may be planted)."""
    return sorted(e.name for e in folder.iterdir() if e.name != MARKER)


_STAGE_NAME = re.compile(r"\.staging-(\d+)")


def _inside(folder: Path, rel, base: str | None = None) -> Path | None:
    """``folder / rel`` when ``rel`` is a plain relative path that stays inside ``folder``
    (symbolic links followed), else None: a marker or journal is a file anyone can edit, so
    no name in it may reach outside the folder. ``base``: ``os.path.realpath(folder)`` when
    the caller already has it."""
    if not isinstance(rel, str) or not rel or "\0" in rel or "\\" in rel:
        return None
    pure = PurePosixPath(rel)
    if pure.is_absolute() or any(part in ("", ".", "..") for part in pure.parts):
        return None
    target = folder / Path(*pure.parts)
    try:
        real = Path(os.path.realpath(target))
        base = Path(os.path.realpath(folder) if base is None else base)
    except OSError:
        return None
    if real != base and base not in real.parents:
        return None
    return target


def check_folder_owner(folder, command: str) -> None:
    """Refuse to write into a non-empty folder that ``command`` did not make.

    An empty or missing folder is fine; a folder whose :data:`MARKER` names ``command`` is
    fine. Anything else could be a user's data (a folder of images, a home directory, ``.``):
    it is refused with one line, and nothing in it is touched.
    """
    f = resolved(folder)
    if not f.is_dir():
        return
    mark = read_marker(f)
    if mark is not None:
        if mark["command"] != command:
            raise InputError(f"{folder}: this folder was written by 'her2radiomics "
                             f"{mark['command']}', not '{command}'; give a new or empty folder "
                             "(nothing was changed)")
        return
    names = _entries(f)
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise InputError(f"{folder}: folder is not empty and was not made by 'her2radiomics "
                         f"{command}' ({len(names)} entries: {shown}); give a new or empty "
                         "folder (nothing was changed)")


def claim_folder(folder, command: str) -> Path:
    """Create ``folder`` if needed and mark it as ``command``'s (keeps the files it lists).

    A swap that a crash cut short is finished only in a folder that was ours already (its
    marker names this command); staging folders of runs that are no longer alive are removed.
    """
    f = resolved(folder)
    f.mkdir(parents=True, exist_ok=True)
    mark = read_marker(f)
    if mark is not None and mark.get("command") == command:
        finish_pending_swap(f)
    elif (f / JOURNAL).exists():
        raise InputError(f"{f / JOURNAL}: a swap journal in a folder that 'her2radiomics "
                         f"{command}' did not make; remove it (nothing was changed)")
    if mark is None or mark.get("command") != command:
        _write_marker(f, command, (mark or {}).get("files", []))
    _remove_dead_stages(f)
    return f


def _remove_dead_stages(folder: Path) -> None:
    """Staging folders left by runs that were killed (their process is gone)."""
    for e in folder.iterdir():
        m = _STAGE_NAME.fullmatch(e.name)
        if m and e.is_dir() and not e.is_symlink() and not _alive(int(m.group(1))):
            shutil.rmtree(e, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _write_marker(folder: Path, command: str, files) -> None:
    atomic_write_text(folder / MARKER, json.dumps({
        "command": command, "files": sorted(set(files)), "version": __version__,
        "written": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))


# -- locks -------------------------------------------------------------------------------------
# msvcrt and fcntl are imported where used: each exists on one platform only

def _lock_fd(fh) -> None:
    if os.name == "nt":   # Windows (Slicer's most common platform) has no fcntl
        import msvcrt
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock_fd(fh) -> None:
    try:
        if os.name == "nt":
            import msvcrt
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        pass


def lock_path(target) -> Path:
    """``<target>.lock`` beside the resolved target (a symlinked output locks its real file)."""
    t = resolved(target)
    return t.with_name(t.name + ".lock")


@contextmanager
def output_lock(target):
    """Hold ``<target>.lock`` for the duration of a run (an OS lock: released on a crash).

    A file of that name that is not one of our locks (it does not start with our tag) is
    refused, never truncated or deleted.

    Raises
    ------
    InputError
        Another live run holds the lock (the message names it), or the lock's name is taken by
        someone else's file.
    """
    lock = lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        try:                    # created here: certainly ours
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                         0o644)
            fh = os.fdopen(fd, "a+", encoding="utf-8", errors="replace")
            fh.write(f"{_LOCK_TAG}starting")     # a concurrent run sees our tag at once
            fh.flush()
        except FileExistsError:
            if lock.is_symlink() or not lock.is_file():
                raise InputError(f"{lock}: exists and is not a her2radiomics lock; move it "
                                 f"away to write {target} (it was left untouched)") from None
            fh = open(lock, "a+", encoding="utf-8", errors="replace")
            fh.seek(0)
            head = fh.read(len(_LOCK_TAG))
            if head != _LOCK_TAG:   # empty or foreign: a person's file, never ours to touch
                fh.close()
                raise InputError(f"{lock}: a file of this name exists and is not a "
                                 f"her2radiomics lock; move it away to write {target} (it "
                                 "was left untouched)") from None
        try:
            _lock_fd(fh)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()[len(_LOCK_TAG):] or "another process"
            fh.close()
            raise InputError(f"{target}: another run is writing it ({holder}); wait for it to "
                             f"finish, or stop it (lock file {lock})") from None
        # the holder before us may have removed the file between our open and our lock:
        # then we hold a lock on a name nobody else sees, so start again on the new file
        try:
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(lock))
        except OSError:
            same = False
        if same:
            break
        _unlock_fd(fh)
        fh.close()
    else:  # pragma: no cover - five lost races in a row
        raise InputError(f"{target}: could not take the lock {lock}")
    try:
        fh.seek(0)
        fh.truncate()
        cmd = " ".join([Path(sys.argv[0]).name] + sys.argv[1:3]) if sys.argv else "python"
        fh.write(f"{_LOCK_TAG}pid {os.getpid()} on {socket.gethostname()}, since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {cmd}")
        fh.flush()
        yield lock
    finally:
        try:
            lock.unlink()
        except OSError:
            pass
        _unlock_fd(fh)
        fh.close()


# -- swaps that finish as a set ----------------------------------------------------------------

@contextmanager
def interrupts_held():
    """Hold Ctrl-C and SIGTERM back for a few milliseconds of renames, then deliver them.

    Only the main thread can install signal handlers; elsewhere the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    sigs = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    old = {}
    for s in sigs:
        try:
            old[s] = signal.signal(s, lambda num, frame: got.append(num))
        except (ValueError, OSError):   # pragma: no cover - not settable here
            pass
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if got:
            if got[0] == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), got[0])


def _files_under(root: Path) -> list:
    return sorted(str(p.relative_to(root)).replace(os.sep, "/") for p in root.rglob("*")
                  if p.is_file() or p.is_symlink())


def finish_pending_swap(folder) -> None:
    """Complete a swap that a crash cut short (see :func:`swap_in`); a no-op otherwise."""
    f = resolved(folder)
    try:
        plan = json.loads((f / JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    _apply(f, plan)


def _checked_plan(out: Path, plan) -> dict:
    """A journal's moves, each confined to the folder; anything else refuses the journal."""
    bad = InputError(f"{out / JOURNAL}: not a swap journal of this folder (it names files "
                     "outside it); remove it (nothing was changed)")
    if not isinstance(plan, dict) or not isinstance(plan.get("stage"), str) \
            or not _STAGE_NAME.fullmatch(plan["stage"]) or not isinstance(
                plan.get("command"), str):
        raise bad
    lists = {}
    for key in ("files", "remove", "kept"):
        items = plan.get(key, [])
        if not isinstance(items, list) or any(_inside(out, r) is None for r in items):
            raise bad
        lists[key] = items
    return {"stage": plan["stage"], "command": plan["command"], **lists}


def _apply(out: Path, plan: dict) -> None:
    plan = _checked_plan(out, plan)
    stage = out / plan["stage"]
    for rel in plan["files"]:
        src, dst = stage / rel, _inside(out, rel)
        if src.exists() or src.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            os.replace(src, dst)
    for rel in plan["remove"]:
        p = _inside(out, rel)
        try:
            p.unlink()
        except OSError:
            continue
        for parent in p.parents:        # folders the previous run made and left empty
            if parent == out or not parent.is_relative_to(out):
                break
            try:
                parent.rmdir()
            except OSError:
                break
    keep = [f for f in plan.get("kept", []) if (out / f).exists()]
    _write_marker(out, plan["command"], list(plan["files"]) + keep)
    if stage.is_dir() and not stage.is_symlink():
        shutil.rmtree(stage, ignore_errors=True)
    try:
        (out / JOURNAL).unlink()
    except OSError:
        pass


def swap_in(stage, out, command: str) -> None:
    """Move every file of ``stage`` into ``out`` as one set, replacing only our own files.

    Files the previous run of ``command`` wrote and this one did not are removed; files in
    ``out`` that no run of ours wrote are never replaced (one of ours by that name is refused
    before anything moves). The renames run with Ctrl-C held back; their list is written first
    (:data:`JOURNAL`) so that a crash in the middle is completed by the next run.
    """
    out, stage = resolved(out), resolved(stage)
    mark = read_marker(out) or {}
    old = set(mark.get("files", []))
    new = [f for f in _files_under(stage) if f not in (MARKER, JOURNAL)]
    foreign = [f for f in new if (out / f).exists() and f not in old]
    if foreign:
        raise InputError(f"{out / foreign[0]}: exists and was not written by 'her2radiomics "
                         f"{command}'; move it away (nothing was replaced)")
    # files of ours that this run did not write: the previous run's, now stale; but a cache
    # the command keeps beside its outputs (a '.parts' folder) is kept
    stale = sorted(f for f in old - set(new) if ".parts/" not in f)
    kept = sorted(f for f in old - set(new) if ".parts/" in f)
    plan = {"stage": stage.name, "command": command, "files": new, "remove": stale,
            "kept": kept}
    with interrupts_held():
        atomic_write_text(out / JOURNAL, json.dumps(plan))
        _apply(out, plan)


@contextmanager
def staged_dir(out, command: str | None = None):
    """Build a folder output aside and swap it in, as a set, only when the block finishes.

    Yields the staging folder (``<out>/.staging-<pid>``). On success its files replace the
    previous run's (see :func:`swap_in`); on any exception the staging folder is removed and
    ``out`` is untouched (a folder this call created is removed again if it stayed empty).

    Parameters
    ----------
    out : path
    command : str, optional
        The command that owns ``out`` (default: the one its marker names, else ``"output"``).

    Raises
    ------
    InputError
        ``out`` is a non-empty folder another command (or a person) made.
    """
    out_r = resolved(out)
    existed = out_r.exists()
    command = command or (read_marker(out_r) or {}).get("command") or "output"
    check_folder_owner(out_r, command)
    claim_folder(out_r, command)
    stage = out_r / f"{_STAGE_PREFIX}{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if not existed and not _entries(out_r):
            shutil.rmtree(out_r, ignore_errors=True)
        raise
    swap_in(stage, out_r, command)


# -- CSV cells a spreadsheet would run ---------------------------------------------------------

#: first characters that make a spreadsheet read a text cell as a formula (OWASP "CSV
#: injection"); numbers such as -0.5 or +3 are numbers, not formulas, and are left alone
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A text cell that a spreadsheet would run as a formula, quoted with a leading ``'``
    (what spreadsheets themselves use to mark text); every other value unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        try:
            float(value)
            return value
        except ValueError:
            return "'" + value
    return value


def spreadsheet_safe_frame(df):
    """A copy of a DataFrame whose text cells (and column names) are :func:`spreadsheet_safe`."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or str(out[c].dtype).startswith(("string", "str")):
            out[c] = out[c].map(spreadsheet_safe)
    out.columns = [spreadsheet_safe(c) for c in out.columns]
    return out


def write_csv(path, df, **kw) -> Path:
    """Write a DataFrame as CSV atomically (symlinks written through), formula cells quoted."""
    return atomic_write_text(path, spreadsheet_safe_frame(df).to_csv(index=False, **kw))


# -- an output is never an input ---------------------------------------------------------------

def refuse_overlaps(inputs, outputs) -> None:
    """Refuse an output that is (symbolic links followed) one of the inputs, or the same file
    as another output: writing it would destroy the input, with exit 0.

    Parameters
    ----------
    inputs, outputs : iterable of path
        Every file the command reads (include :func:`~HER2RadiomicsLib.imaging.io.
        companion_files`) and every file it writes.

    Raises
    ------
    InputError
        One line naming the output and the input it would destroy.
    """
    ins = {}
    for p in inputs:
        ins.setdefault(resolved(p), p)
    seen = {}
    for o in outputs:
        r = resolved(o)
        if r in ins:
            same = "" if str(ins[r]) == str(o) else f" ({o} is {ins[r]})"
            raise InputError(f"{o}: output is also an input of this command{same}; writing it "
                             "would destroy the input; choose another output (nothing was "
                             "changed)")
        if r in seen:
            raise InputError(f"{o}: given for two outputs ({seen[r]} and {o}); choose two "
                             "different files")
        seen[r] = o
