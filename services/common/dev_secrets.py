"""Development-only secrets generated into the data directory when none is configured."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from services.common import pipeline_mac
from services.common.pipeline_mac import PipelineKeys
from services.settings import Settings

DEV_JWT_SECRET_FILE = "dev-jwt-secret"  # noqa: S105 - a file name, not a secret
DEV_PIPELINE_KEYS_FILE = "dev-pipeline-keys"
DEV_DB_PASSWORDS_FILE = "dev-db-passwords"


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


def pipeline_keys(settings: Settings, *, create: bool = False) -> PipelineKeys:
    """The keys that sign and verify care.audit and care.board-updates messages.

    CARECOORD_PIPELINE_KEYS wins. Otherwise a DEV key file in the data directory, which
    only `carecoord up` generates (create=True): elsewhere a missing key is an error, or
    each process of a cluster would make its own and refuse the others' messages.
    Raises BadPipelineKeys.
    """
    if settings.pipeline_keys is not None:
        return pipeline_mac.parse(settings.pipeline_keys.get_secret_value())
    path = dev_secret_path(settings, DEV_PIPELINE_KEYS_FILE)
    if not path.exists():
        if not create:
            raise pipeline_mac.BadPipelineKeys(
                f"no pipeline keys: set CARECOORD_PIPELINE_KEYS, or run `carecoord up` once "
                f"to generate a development key in {path}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and linked into place: a process racing this one reads either no
        # file or the whole key, never half of it, and never a second key.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pipeline_mac.new_key_spec("dev") + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return pipeline_mac.parse(path.read_text().strip(), source=f"DEV key file {path}")


def db_passwords(settings: Settings, *, create: bool = False) -> tuple[str, str, str]:
    """The embedded server's login passwords of the schema owner and of the services'
    role, and where they came from: a DEV file in the data directory (0600), generated
    when create is true. Only `carecoord up` makes the roles; elsewhere the passwords are
    in the two database URLs (CARECOORD_MIGRATE_DATABASE_URL, CARECOORD_DATABASE_URL)."""
    path = dev_secret_path(settings, DEV_DB_PASSWORDS_FILE)
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no database passwords in {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "warning": "DEVELOPMENT database passwords of the embedded server",
            "owner": secrets.token_urlsafe(24),
            "app": secrets.token_urlsafe(24),
        }
        # Written aside and linked into place, as the pipeline keys are: never half a file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=2)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    stored = json.loads(path.read_text())
    return str(stored["owner"]), str(stored["app"]), f"DEV file {path}"
