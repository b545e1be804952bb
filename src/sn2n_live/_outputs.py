"""Output files: checked before the long work, written under a temporary name, umask modes.

Every layer writes through these helpers (they need the standard library only), so that

- a bad output path fails at once, before training, denoising or acquiring, with one line
  that says what is wrong, where, and how to fix it (:func:`check_output`);
- a failure part-way leaves nothing that looks like a result: outputs are written to a
  hidden sibling and renamed into place only when complete (:func:`temporary_sibling`,
  :func:`publish`, :func:`atomic_write`);
- files get the mode the user's umask asks for, as ``open()`` would give them, not the
  owner-only ``0o600`` of :func:`tempfile.mkstemp` (:func:`file_mode`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = [
    "OutputPathError",
    "atomic_write",
    "check_output",
    "check_writable_dir",
    "file_mode",
    "follow_umask",
    "open_atomic",
    "publish",
    "temporary_sibling",
]


class OutputPathError(ValueError):
    """An output path that cannot be written; the message says how to fix it."""


def _current_umask() -> int:
    # Linux reports the umask without changing it. Setting and restoring it (the only
    # portable way) briefly changes it for every thread, e.g. a writer creating chunks.
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """Return the mode a new file gets from ``open()`` under the current umask."""
    return 0o666 & ~_current_umask()


def follow_umask(store: Path) -> None:
    """Give an OME-Zarr store's group metadata the umask's mode.

    ome-writers writes each group's ``zarr.json`` through a ``NamedTemporaryFile``, which
    leaves it owner-only (``0o600``); the arrays' metadata and chunks already follow the
    umask. Groups sit at the top (and one level down for multi-position stores).
    """
    mode = file_mode()
    for doc in (store / "zarr.json", *store.glob("*/zarr.json")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(doc, mode)


def check_writable_dir(folder: Path, *, what: str = "output") -> None:
    """Create ``folder`` (with its parents) if needed and prove a file can be made in it.

    A real probe file, not ``os.access``: root passes every permission check, but not a
    read-only mount, a full disk or a folder that is a file.

    Raises
    ------
    OutputPathError
        If the folder cannot be created or written to.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".sn2n-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputPathError(
            f"cannot write the {what} in {folder}: {reason}; choose a folder you can write to"
        ) from exc


def check_output(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    overwrite_hint: str | None = "overwrite=True",
    what: str = "output",
    allow_empty_dir: bool = False,
) -> Path:
    """Check that ``path`` can be written, before any long work starts.

    The parent folder is created if missing and must be writable; ``path`` must not
    exist unless ``overwrite``.

    Parameters
    ----------
    path : str or os.PathLike
        The file or folder that will be written.
    overwrite : bool
        Whether an existing ``path`` may be replaced.
    overwrite_hint : str or None
        How the caller allows replacing, named in the error (``"--overwrite"`` on the
        command line); None when replacing is never allowed.
    what : str
        What the output is, for the message (``"model package"``, ``"run folder"``).
    allow_empty_dir : bool
        Accept an existing empty folder (a run folder made beforehand).

    Returns
    -------
    pathlib.Path
        ``path``, absolute.

    Raises
    ------
    FileExistsError
        If ``path`` exists and may not be replaced.
    OutputPathError
        If the parent folder cannot be created or written to.
    """
    target = Path(path).expanduser().absolute()
    exists = target.exists() or target.is_symlink()
    if exists and not overwrite:
        empty_dir = target.is_dir() and not any(target.iterdir())
        if not (allow_empty_dir and empty_dir):
            fix = f"pass {overwrite_hint} to replace it" if overwrite_hint else "remove it"
            raise FileExistsError(
                f"the {what} {target} already exists; choose another path or {fix}"
            )
    check_writable_dir(target.parent, what=what)
    return target


@contextmanager
def temporary_sibling(target: Path) -> Iterator[Path]:
    """Yield a fresh hidden path next to ``target``; remove whatever is left there after.

    Write the output to the yielded path, then :func:`publish` it inside the block. If
    the block raises, or the output was never published, the partial output is removed.

    The yielded path has ``target``'s name inside a hidden ``.NAME.*.partial`` folder,
    so writers that pick their format from the name (``.ome.zarr``, ``.ome.tiff``) work.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp / target.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(partial: Path, target: Path, *, overwrite: bool) -> None:
    """Move a completed output into place, replacing ``target`` only if ``overwrite``.

    Files replace atomically; a folder (an OME-Zarr store) that replaces another is swapped
    in with two renames, the old one removed only after the new one is in place.

    Raises
    ------
    OutputPathError
        If ``target`` appeared meanwhile and may not be replaced.
    """
    exists = target.exists() or target.is_symlink()
    if exists and not overwrite:
        raise OutputPathError(f"the output {target} appeared while it was being written")
    if not exists or not (partial.is_dir() and target.is_dir()):
        if exists and target.is_dir():
            shutil.rmtree(target)
        os.replace(partial, target)
        return
    old = partial.with_name(partial.name + ".old")
    os.replace(target, old)
    os.replace(partial, target)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write(target: Path, data: bytes | str, *, fsync: bool = False) -> None:
    """Write ``data`` to ``target`` through a temporary sibling and an atomic rename.

    Readers never see a half-written file; the file gets the umask's mode
    (:func:`file_mode`). A crash leaves at most a hidden ``.tmp`` sibling. ``fsync``:
    see :func:`open_atomic`.
    """
    with open_atomic(target, fsync=fsync) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextmanager
def open_atomic(target: Path, *, fsync: bool = False) -> Iterator[IO[bytes]]:
    """Open a temporary sibling of ``target`` for binary writing; rename it on success.

    ``fsync``: flush the data to disk before the rename, so that the name never points at
    a torn file after a power cut (off for files rewritten during a live run, where a
    sync would also flush the camera's frames in the middle of the acquisition).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
