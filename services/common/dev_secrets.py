"""Development-only secrets generated into the data directory when none is configured."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from services.settings import Settings

DEV_JWT_SECRET_FILE = "dev-jwt-secret"  # noqa: S105 - a file name, not a secret


def dev_secret_path(settings: Settings, name: str) -> Path:
    return settings.data_dir / name


def jwt_secret(settings: Settings, *, create: bool = False) -> tuple[str | None, str]:
    """The HS256 secret and where it came from.

    CARECOORD_JWT_SECRET wins. Otherwise a DEV secret kept in the data directory is used
    (generated when create is true); it is for one machine's development stack only.
    """
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value(), "CARECOORD_JWT_SECRET"
    path = dev_secret_path(settings, DEV_JWT_SECRET_FILE)
    if not path.exists():
        if not create:
            return None, "none"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip(), f"DEV secret generated in {path}"
