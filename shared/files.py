"""Files and folders of a deployment written whole, with the mode asked for, whatever the umask.

`sivr init` writes secrets (store keys, the CA and token keys) into folders an operator may have
prepared: opening the name with O_CREAT|O_TRUNC kept an existing file's mode (a 0644 key) and
followed a link planted there, writing the key into whatever it pointed to. Here a new file is made
beside the name (O_EXCL, never a link), synced, then renamed onto the name: a link there is
replaced, never followed, and a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from shared.config import ConfigError

PRIVATE = 0o600  # keys and anything holding a secret
PUBLIC = 0o644  # configs, certificates, public keys


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with a file holding `data` and exactly `mode`."""
    path = Path(path)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask narrowed the mode os.open was given; never widened it
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)  # the rename itself survives a crash
    finally:
        os.close(folder)


def make_folder(path: Path, mode: int) -> None:
    """Create `path` and its missing parents with `mode` whatever the umask; existing ones keep theirs."""
    path = Path(path)
    missing = []
    while not path.exists() and not path.is_symlink():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode)
        folder.chmod(mode)


def require_owner_only(path: Path, what: str) -> None:
    """ConfigError unless only the file's owner may read it (group and others have no bit): the
    rule of every secret a server loads (signing and receipt keys, store keys, TLS keys, proxy
    secrets, tokens, credentials). A copy left readable by every local user is refused at start
    rather than served with; the error says the fix."""
    mode = Path(path).stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{what} {path} must be readable by its owner only (chmod 600), is {oct(mode)}")
