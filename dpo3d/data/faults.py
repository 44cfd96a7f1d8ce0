"""Failures a user can act on, and the checks that find them before long work starts.

A :class:`Fault` is shown by the command layer as one line (exit code 2): it names the file and what to
do. Anything else that escapes a command is a bug in dpo3d (exit code 1, the traceback behind
``--debug``). :func:`os_error_text` turns the operating system's errors on a file (a read-only folder, a
folder where a file belongs, a full disk) into such a line.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


class Fault(Exception):
    """A failure the user can fix: its text is one line naming the file and the remedy."""


class CorruptFile(Fault):
    """A state or weights file that cannot be read back as written (truncated, garbled, emptied)."""

    def __init__(self, path: str | os.PathLike, what: str, problem: str, remedy: str):
        self.path = Path(path)
        super().__init__(f"{path}: {what} is unreadable ({problem}); {remedy}")


class OutputUnusable(Fault):
    """An output location that cannot be written (checked before the work that would fill it)."""


_ADVICE = {
    errno.ENOSPC: "no space left on its disk: free some or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted: free some space or write elsewhere",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "operation not permitted: choose a folder you can write to",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EISDIR: "it is a folder where a file is expected: give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EEXIST: "it already exists",
    errno.ENOENT: "no such file or folder",
}


def os_error_text(err: OSError) -> str:
    """One line for an OS error: the path it concerns and what to do about it."""
    where = err.filename if err.filename is not None else None
    advice = _ADVICE.get(err.errno or -1) or (err.strerror or str(err))
    return f"{where}: {advice}" if where is not None else advice


def _existing_ancestor(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    return probe


def _probe_writable(folder: Path, target: Path, flag: str) -> None:
    """Create and remove a file in ``folder``: the only test that holds for root, ACLs and read-only mounts."""
    if not folder.is_dir():
        raise OutputUnusable(f"{flag} {target}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".dpo3d-write-check."):
            pass
    except OSError as err:
        reason = _ADVICE.get(err.errno or -1, err.strerror or str(err))
        raise OutputUnusable(f"{flag} {target}: cannot write in {folder} ({reason})") from None


def check_output_file(path: str | os.PathLike | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot be written: a folder in its place, a parent that
    is a file, or a folder (the nearest one that exists) that does not take new files. ``-`` is stdout."""
    if path is None or str(path) == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise OutputUnusable(f"{flag} {target}: is a folder; give the path of a file")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputUnusable(f"{flag} {target}: the file is not writable")
    _probe_writable(_existing_ancestor(target.parent), target, flag)


def check_output_folder(path: str | os.PathLike | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file or that cannot be created or written."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputUnusable(f"{flag} {target}: is a file; give the path of a folder (new or a run's own)")
    _probe_writable(_existing_ancestor(target), target, flag)


def temp_prefix(target: Path) -> str:
    """The name prefix of an atomic write's temp file beside ``target``: it carries the writer's pid, so a
    later run knows a leftover whose writer is dead (:func:`remove_stale_temps`)."""
    return f".{target.name}.{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_failure_text(err: Exception) -> str:
    """What went wrong writing a file: an OSError as :func:`os_error_text` words it, else (safetensors'
    SafetensorError on a full disk) the error's first line."""
    return os_error_text(err) if isinstance(err, OSError) else str(err).strip().splitlines()[0]


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the temp files interrupted atomic writes of ``target`` left beside it (``.NAME.PID.*.tmp``
    whose writer is no longer running). Returns what was removed."""
    target = Path(target)
    if str(target) == "-" or not target.parent.is_dir():
        return []
    removed = []
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        pid_text = leftover.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid_text.isdigit() and (int(pid_text) == os.getpid() or pid_alive(int(pid_text))):
            continue
        try:
            leftover.unlink()
            removed.append(leftover)
        except OSError:
            continue
    return removed
