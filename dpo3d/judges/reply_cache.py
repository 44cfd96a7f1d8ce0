"""The LLM judge's reply cache: judge replies by request hash, in one SQLite file.

A rerun with the same inputs sends no request for a reply it already has. A corrupt file is started
afresh with one warning (it is a cache); one another process holds locked is waited for, then a
:class:`~dpo3d.data.faults.Fault` names it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpo3d.data.faults import Fault

#: how long to wait by default for the reply cache while another process holds its lock
CACHE_WAIT_S = 30.0


def _sqlite_trouble(err: sqlite3.Error) -> str:
    """``corrupt`` (not a database, a malformed image), ``locked`` (busy past the wait) or ``other``."""
    name = getattr(err, "sqlite_errorname", "") or ""  # Python 3.11+
    text = str(err).lower()
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "not a database" in text or "malformed" in text:
        return "corrupt"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return "locked"
    return "other"


class ReplyCache:
    """Judge replies by request hash, in one SQLite file; safe to share between threads.

    A file that is not a database, or a damaged one, is removed and started afresh with one warning (it is
    a cache: its replies are asked again). A file another process holds locked is waited for ``wait_s``
    seconds (SQLite's busy timeout); after that, and on anything else SQLite refuses (a folder in the
    file's place, a read-only file), a :class:`~dpo3d.data.faults.Fault` names the file and what to do.
    """

    def __init__(self, path: str | os.PathLike, wait_s: float = CACHE_WAIT_S):
        self.path = Path(path)
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._rebuilt = False
        self._failed: Fault | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._use(lambda db: None)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=self.wait_s)
        try:
            with db:
                db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
        except BaseException:
            db.close()
            raise
        return db

    def _use(self, action: Callable[[sqlite3.Connection], Any]) -> Any:
        """``action(db)`` under the lock; a corrupt file is rebuilt once and the action tried again."""
        with self._lock:
            if self._failed is not None:  # the cache failed for another thread already: fail alike, at once
                raise self._failed
            while True:
                try:
                    if self._db is None:
                        self._db = self._connect()
                    return action(self._db)
                except sqlite3.Error as err:
                    trouble = _sqlite_trouble(err)
                    if trouble == "corrupt" and not self._rebuilt:
                        self._rebuild(err)
                        continue
                    self._failed = self._fault(trouble, err)
                    raise self._failed from None

    def _fault(self, trouble: str, err: sqlite3.Error) -> Fault:
        if trouble == "locked":
            return Fault(f"{self.path}: the judge's reply cache is locked by another process (waited {self.wait_s:g} s); "
                         "let that run finish, or give this one a cache of its own (--cache FILE) or none (--no-cache)")
        what = "is damaged past repair" if trouble == "corrupt" else "cannot be used"
        return Fault(f"{self.path}: the judge's reply cache {what} ({err}); give --cache a file you can write, "
                     "or run with --no-cache")

    def _rebuild(self, err: sqlite3.Error) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        for leftover in (self.path, *(self.path.with_name(self.path.name + end) for end in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        self._rebuilt = True
        warnings.warn(f"{self.path}: the judge's reply cache was unreadable ({err}); started it afresh (its replies "
                      "will be asked again)", stacklevel=4)

    def get(self, key: str) -> str | None:
        row = self._use(lambda db: db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone())
        return row[0] if row else None

    def put(self, key: str, reply: str) -> None:
        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT OR REPLACE INTO replies (key, reply) VALUES (?, ?)", (key, reply))

        self._use(insert)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
