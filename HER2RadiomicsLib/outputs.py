"""Outputs that are never destroyed: up-front checks, one run per output, staged swaps.

Rules every command follows:

* an output path is checked before any work starts (a folder where a file is expected, a
  parent that is a file, an unwritable folder: one line, exit 2);
* two runs on the same output take a lock (``<out>.lock``); the second one is refused and told
  who holds it (process id, host, start time, command);
* an output is replaced only by a complete, successful result: results are written aside
  (``<out>.parts/``, a staging folder) and swapped into place at the end, so an interrupted or
  failed run leaves the previous outputs intact.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def check_output(path, kind: str = "file") -> Path:
    """Refuse an output path that cannot be written, before any work.

    Parameters
    ----------
    path : path
    kind : {"file", "dir"}

    Raises
    ------
    InputError
        The path is a folder (for a file), a file (for a folder), under a file, or in a folder
        this user cannot write.
    """
    p = Path(path)
    if kind == "file" and p.is_dir():
        raise InputError(f"{p}: is a folder; give a file name for the output")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise InputError(f"{p}: exists and is not a folder")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"{p}: not writable")
    anc = p.absolute().parent          # the nearest folder that exists
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"{p}: cannot be created: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"{p}: cannot write in {anc} (permission denied)")
    return p


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
    t = Path(target)
    return t.with_name(t.name + ".lock")


@contextmanager
def output_lock(target):
    """Hold ``<target>.lock`` for the duration of a run (an OS lock: released on a crash).

    Raises
    ------
    InputError
        Another live run holds the lock; the message names it.
    """
    lock = lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        fh = open(lock, "a+", encoding="utf-8")
        try:
            _lock_fd(fh)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
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
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
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


@contextmanager
def staged_dir(out):
    """Build a folder output aside and swap it in only when the block finishes.

    Yields the staging folder (``.<name>.staging-<pid>`` beside ``out``). On success the old
    folder (if any) is moved aside, the staging folder takes its name and the old one is
    deleted; on any exception the staging folder is removed and ``out`` is untouched.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.staging-{os.getpid()}")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)
