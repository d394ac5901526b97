"""One writer per results folder: an OS file lock (flock) on OUT/.lock, held for the whole run.

The kernel releases the lock when its process dies, however it dies, so the lock of a killed run
never blocks the next one; the file itself stays and only says who held it last.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from ..errors import UsageError, setting
from ..files import Folder, reason

LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # not POSIX: no lock, as before
    fcntl = None


class FolderLock:
    def __init__(self, folder: Folder, name: str = LOCK_FILE, shared: bool = False):
        # shards of one job share the folder's lock and each holds its own exclusively: they run side
        # by side, while a whole run (or the gallery) waits for all of them
        self.folder, self.name, self.shared = folder, name, shared
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        if fcntl is None:
            return self
        path = self.folder.where(self.name)
        try:  # never through a link: a link planted there would make this run overwrite its target
            fd = self.folder.open_file(self.name, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise UsageError(
                f"the lock file {path!r} is {reason(e)}; remove it, or use another {setting('out')}"
            ) from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 400).decode(errors="replace").strip() or "a process that has not said who it is"
            os.close(fd)
            raise UsageError(
                f"{self.folder.path!r} is being written by another run ({holder}); wait for it to "
                f"finish, or use another {setting('out')}"
            ) from None
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        try:  # who holds it, for the message of a second run (a full disk only loses this note)
            os.ftruncate(fd, 0)
            os.write(
                fd,
                f"pid {os.getpid()} on {socket.gethostname()} since "
                # surrogateescape: a path of bytes that are not UTF-8 is written back as those bytes
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {command}\n".encode(errors="surrogateescape"),
            )
        except OSError:
            pass
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
