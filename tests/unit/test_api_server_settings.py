"""How the API process is served: on uvloop and httptools, its WebSockets without
permessage-deflate unless turned on and pinged every minute, and its cycle collector run
as rarely as the settings say (a full collection stops the event loop for as long as it
walks every socket's objects)."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from services.api import app as api_app
from services.api.http_protocol import HttpProtocol
from services.api.websocket import WebSocketProtocol
from services.common import log
from services.settings import Settings

# The module (services.cli exports its `main` function under the same name).
cli = importlib.import_module("services.cli.main")

SECRET = SecretStr("unit-test-secret-that-is-long-enough-too")


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_api_process_collects_cycles_as_rarely_as_its_settings_say(
    monkeypatch: pytest.MonkeyPatch, collector: None
) -> None:
    settings = Settings(_env_file=None, jwt_secret=SECRET, api_gc_thresholds=(12_345, 67, 890))
    monkeypatch.setattr(api_app, "get_settings", lambda: settings)
    monkeypatch.setattr(api_app, "configure_logging", lambda *_: None)

    api_app.app_from_env()

    assert gc.get_threshold() == (12_345, 67, 890)
    assert gc.get_freeze_count() > 0  # what start-up built is never walked again


@pytest.mark.parametrize("deflate", [False, True])
def test_the_api_serves_websockets_with_permessage_deflate_only_when_turned_on(
    monkeypatch: pytest.MonkeyPatch, deflate: bool
) -> None:
    monkeypatch.delenv("CARECOORD_AUDIT_SIGNING_KEY", raising=False)
    settings = Settings(
        _env_file=None,
        jwt_secret=SECRET,
        database_url="postgresql://nowhere/none",
        **({"ws_per_message_deflate": True} if deflate else {}),
    )
    served: dict[str, Any] = {}
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    for check in ("need", "warn_if_owner"):
        monkeypatch.setattr(cli, check, lambda *_: None)
    monkeypatch.setattr(log, "configure_logging", lambda *_: None)
    monkeypatch.setattr(uvicorn, "run", lambda *_, **options: served.update(options))

    cli.api()

    assert served["ws_per_message_deflate"] is deflate
    assert served["ws"] is WebSocketProtocol  # which lets go of the handshake once answered
    assert served["ws_ping_interval"] == 60.0  # not uvicorn's 20 s: a write and a read a socket
    assert served["loop"] == "uvloop"  # whose transports hold a socket in less memory
    assert served["http"] is HttpProtocol  # httptools, its request head bounded as h11's
