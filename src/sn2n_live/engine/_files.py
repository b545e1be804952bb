"""Small file helpers shared by the exporters and the plan cache."""

from __future__ import annotations

import hashlib

# One implementation for every layer: temporary sibling, rename, the umask's file mode.
from sn2n_live._outputs import atomic_write

__all__ = ["atomic_write", "sha256_bytes"]


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
