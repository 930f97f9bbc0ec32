"""The Faust worker: the board agents (care.events) and the audit writer (care.audit)."""

from __future__ import annotations

from collections.abc import Sequence

import faust

from services.audit import agents as audit_agents
from services.common.projection import Projection
from services.common.worker import dead_letters, make_app, serve_metrics
from services.settings import Settings
from services.tasks import agents as board_agents


def create_worker_app(
    settings: Settings, *, projections: Sequence[Projection] | None = None
) -> faust.App:
    app = make_app(settings)
    to_dlq = dead_letters(app, settings)
    board_agents.install(app, settings, to_dlq, projections)
    audit_agents.install(app, settings, to_dlq)
    serve_metrics(settings)
    return app
