"""One run per folder: a lock file that the operating system releases when its holder dies.

A run (training, a study, an iterate run) holds ``FOLDER/.dpo3d.lock`` while it writes the folder: an
exclusive ``flock`` on it, and the holder's pid written in it for the message. A second run on the same
folder is refused with one line naming that pid (:class:`FolderInUse`). The kernel drops the ``flock`` of a
process that dies however it dies (``kill -9`` included), so a lock file left behind by a dead run is simply
taken over by the next one. The holder removes the file when it ends.

Where the file system has no ``flock`` (some cluster file systems mounted without it) the pid alone decides:
a live process holding that pid keeps the folder, a dead one's lock is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from .faults import Fault, pid_alive

try:
    import fcntl
except ImportError:  # Windows: the pid alone decides
    fcntl = None

LOCK_FILE = ".dpo3d.lock"

#: flock's failures that mean "this file system does not lock", not "someone holds it"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderInUse(Fault):
    """Another live run holds the folder."""

    def __init__(self, folder: str | os.PathLike, pid: int | None):
        self.folder, self.pid = Path(folder), pid
        holder = f"another run (pid {pid})" if pid else "another run"
        super().__init__(f"{folder} is in use by {holder}: wait for it to end, or give another --out")


def _flock(fd: int) -> bool | None:
    """Lock ``fd`` without waiting: True (ours), False (another holds it), None (no flock here)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in _NO_FLOCK:
            return None
        raise
    return True


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _holder(fd: int) -> int | None:
    """The holder's pid; it writes it just after it locks, so an empty file is read again for a moment."""
    for _ in range(20):
        pid = _read_pid(fd)
        if pid is not None:
            return pid
        time.sleep(0.01)
    return None


def _same_file(path: Path, fd: int) -> bool:
    try:
        named, opened = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


class RunLock:
    """The lock of one run folder. ``acquire`` (or ``with``) takes it or raises :class:`FolderInUse`;
    ``release`` gives it back and removes the lock file (and the folder, when acquiring made it and
    nothing else was written in it). ``taken_over``: the pid of a dead holder whose lock file was left."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.taken_over: int | None = None
        self._fd: int | None = None
        self._made_folder = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made_folder = True
        for _ in range(100):  # another holder removed the file between our open and our lock: lock the new one
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _flock(fd)
                if locked is False:
                    raise FolderInUse(self.folder, _holder(fd))
                previous = _read_pid(fd)
                if locked is None and previous not in (None, os.getpid()) and pid_alive(previous):
                    raise FolderInUse(self.folder, previous)
                if locked and not _same_file(self.path, fd):
                    os.close(fd)
                    continue
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                self._forget_folder()
                raise
            self.taken_over = previous if previous not in (None, os.getpid()) else None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            self._fd = fd
            return self
        raise FolderInUse(self.folder, None)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(self.path, fd):  # removed while still locked: a run that opens it now locks a new file
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)
        self._forget_folder()

    def _forget_folder(self) -> None:
        if self._made_folder:
            self._made_folder = False
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty: a run that failed before writing anything leaves nothing

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_free(folder: str | os.PathLike) -> None:
    """Refuse now, before long work, a folder a live run holds (the run then takes the lock itself)."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        locked = _flock(fd)  # a probe: closing the file gives it back
        if locked is False:
            raise FolderInUse(folder, _holder(fd))
        holder = _read_pid(fd)
        if locked is None and holder not in (None, os.getpid()) and pid_alive(holder):
            raise FolderInUse(folder, holder)
    finally:
        os.close(fd)


@contextlib.contextmanager
def held(folder: str | os.PathLike, take: bool = True):
    """``folder``'s lock for the block (``take`` False: none, as on the other processes of a launch)."""
    if not take:
        yield None
        return
    with RunLock(folder) as lock:
        yield lock
