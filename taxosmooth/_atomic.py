"""Writing files so that a failure never leaves a half-written one.

Every file is written to a temporary file in the same folder and renamed over
its destination (``os.replace``, atomic on POSIX and Windows) only once it is
complete: an exception, a ``KeyboardInterrupt`` or a full disk leaves the old
file as it was, and the temporary file is removed. :class:`PendingFiles` does
the same for several files that belong together (a matrix and its class list):
all are written first, then all are renamed.
"""

from __future__ import annotations

import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


def _destination(path: str | os.PathLike) -> Path:
    # write through a symbolic link to the file it names, as open() would
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _open_temporary(final: Path) -> tuple[Path, BinaryIO]:
    """A new, empty file beside ``final``, with the permissions ``open(final, "w")`` would give it."""
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 through the umask, as for any new file
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        try:
            if final.exists():
                os.chmod(fd if os.chmod in os.supports_fd else tmp, stat.S_IMODE(final.stat().st_mode))
            return tmp, os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
    raise FileExistsError(f"cannot create a temporary file beside {final}")


class PendingFiles:
    """Files written beside their destinations and renamed into place together.

    >>> with PendingFiles() as files:          # doctest: +SKIP
    ...     with files.open("matrix.npy") as fh:
    ...         fh.write(data)
    ...     with files.open("matrix.npy.classes.txt") as fh:
    ...         fh.write(names)
    ... # both renamed here; on an exception neither destination is touched

    ``commit`` renames in the order the files were opened; ``discard``
    removes the temporary files. Leaving the ``with`` block commits, or
    discards when an exception (``KeyboardInterrupt`` included) is on its way.
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []  # (temporary, destination)

    @contextmanager
    def open(self, path: str | os.PathLike) -> Iterator[BinaryIO]:
        final = _destination(path)
        tmp, fh = _open_temporary(final)
        self._files.append((tmp, final))
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def temporary(self, path: str | os.PathLike) -> Path:
        """A temporary path for a writer that wants a file name (it is renamed to ``path`` on commit)."""
        final = _destination(path)
        tmp, fh = _open_temporary(final)
        fh.close()
        self._files.append((tmp, final))
        return tmp

    def temporary_of(self, path: str | os.PathLike) -> Path:
        """Where the content for ``path`` is being written until the commit (to read it back, e.g. to hash it)."""
        final = _destination(path)
        for tmp, dest in self._files:
            if dest == final:
                return tmp
        raise KeyError(f"{path} is not one of these pending files")

    @property
    def destinations(self) -> list[Path]:
        return [final for _, final in self._files]

    def commit(self) -> list[Path]:
        for tmp, final in self._files:
            os.replace(tmp, final)
        done = self.destinations
        self._files = []
        return done

    def discard(self) -> None:
        for tmp, _ in self._files:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        self._files = []

    def __enter__(self) -> PendingFiles:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file object; its content replaces ``path`` when the block ends without an exception."""
    with PendingFiles() as files:
        with files.open(path) as fh:
            yield fh
