"""Where dpo3d keeps what it converts or caches: ``$DPO3D_CACHE``, else ``$XDG_CACHE_HOME/dpo3d``, else ``~/.cache/dpo3d``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where converted models live: ``$DPO3D_CACHE`` or ``$XDG_CACHE_HOME/dpo3d`` or ``~/.cache/dpo3d``."""
    env = os.environ.get("DPO3D_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dpo3d"
