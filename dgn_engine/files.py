"""Files written atomically (temporary file, fsync, rename), folders reached without following links,
and bounded reads of the files a user names."""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import stat
import tempfile

from .errors import UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private


def atomic_write(path: str, data: bytes) -> None:
    """Either the whole file appears under `path` or nothing changes (also on kill -9)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str, obj) -> None:
    atomic_write(path, json_bytes(obj))


# -- a folder the project owns ------------------------------------------------------------------
LINK_OR_SPECIAL = "a link or not a plain file"


class Folder:
    """A folder opened once; every name in it is reached relative to that handle, never through a link.

    The path the user names may pass through links (theirs); inside the folder nothing is followed: a
    link, FIFO or device where the project expects its own file or folder is refused in one line. So a
    results folder shared with others cannot make a run write, read or delete anything outside it.
    """

    def __init__(self, path: str, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def open(cls, path: str, create: bool = False, what: str = "folder") -> "Folder":
        if not path:
            raise UsageError(f"the {what} is an empty path; name a folder")
        if create:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as e:
                raise UsageError(f"cannot create the {what} {path!r}: {e.strerror}") from None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise UsageError(f"cannot open the {what} {path!r}: {e.strerror}") from None
        return cls(path, fd)

    def __enter__(self) -> "Folder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.close()

    def where(self, name: str) -> str:
        return os.path.join(self.path, name)

    def kind(self, name: str) -> str | None:
        """'file', 'folder', 'other' (a link, FIFO, device, socket) or None where nothing is."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return "file" if stat.S_ISREG(st.st_mode) else "folder" if stat.S_ISDIR(st.st_mode) else "other"

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def sub(self, name: str, create: bool = False, what: str = "folder") -> "Folder":
        """The folder `name` in this one (made if asked); a link there is refused, not followed."""
        if create and self.kind(name) is None:
            try:
                os.mkdir(name, 0o777, dir_fd=self.fd)
            except FileExistsError:
                pass
            except OSError as e:
                raise UsageError(f"cannot create {self.where(name)!r}: {e.strerror}") from None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as e:
            where = self.where(name)
            raise UsageError(f"the {what} {where!r} is {reason(e)}; remove it, or use another folder") from None
        return Folder(self.where(name), fd)

    def open_file(self, name: str, flags: int, mode: int = 0o644) -> int:
        """A plain file's descriptor; a link or anything but a plain file is refused (OSError ELOOP,
        or UsageError after the open where a FIFO or device answered)."""
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=self.fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UsageError(f"{self.where(name)!r} is {LINK_OR_SPECIAL}; remove it, or use another folder")
        return fd

    def read(self, name: str, limit: int, what: str = "file") -> bytes:
        """The bytes of the plain file `name`, at most `limit` of them (else one line)."""
        try:
            fd = self.open_file(name, os.O_RDONLY)
        except OSError as e:
            raise UsageError(f"cannot read {what} {self.where(name)!r}: it is {reason(e)}") from None
        return _read_bounded(fd, limit, f"{what} {self.where(name)!r}")

    def write(self, name: str, data: bytes) -> None:
        """Atomically: a private temporary file, fsync, then renamed over `name` (a link at `name` is
        replaced, never followed)."""
        tmp = f".tmp-{secrets.token_hex(6)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, _FILE_MODE, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise

    def write_json(self, name: str, obj) -> None:
        self.write(name, json_bytes(obj))

    def remove(self, name: str) -> None:
        """Removes `name` if it is a plain file or a link (the link itself); never what a link points at."""
        if self.kind(name) in ("file", "other"):
            os.unlink(name, dir_fd=self.fd)


def reason(e: OSError) -> str:
    """Why a name could not be opened, in words (ELOOP is what O_NOFOLLOW gives for a link)."""
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return LINK_OR_SPECIAL
    return f"not accessible ({e.strerror or e})"


def _read_bounded(fd: int, limit: int, what: str) -> bytes:
    try:
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise UsageError(f"{what} has {size} bytes, more than the {limit} a file of its kind may have")
            data = f.read(limit + 1)
    except OSError as e:
        raise UsageError(f"cannot read {what}: {e.strerror}") from None
    if len(data) > limit:
        raise UsageError(f"{what} grew past the {limit} bytes a file of its kind may have")
    return data


def read_plain_file(path: str, limit: int, what: str) -> bytes:
    """The bytes of a file the user names (it may be reached through their links), if it is a plain
    file of at most `limit` bytes: a FIFO, a device (/dev/zero) or a folder gives one line, never a
    hang or a MemoryError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(f"cannot read {what} {path!r}: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a plain file (a FIFO, device or socket)"
        raise UsageError(f"{what} {path!r} is {kind}; give a file")
    return _read_bounded(fd, limit, f"{what} {path!r}")


def finite(obj):
    """`obj` with every NaN or infinite float replaced by None (a diverged search's numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_bytes(obj) -> bytes:
    """Strict JSON (no NaN or Infinity, which browsers and other readers refuse): a caller turns
    non-finite numbers into null first; one left over is a bug, raised here, not written."""
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
