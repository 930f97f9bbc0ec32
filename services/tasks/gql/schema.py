"""The tasks service's root fields, which services/api/schema.py merges into the schema."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from services.plans.gql.types import Huddle
from services.tasks.gql import board
from services.tasks.gql.agenda import HuddleAgenda, huddle_agenda
from services.tasks.gql.types import Board, BoardEvent, Task

__all__ = ["TasksMutation", "TasksQuery", "TasksSubscription"]


@strawberry.type
class TasksQuery:
    board: Board = strawberry.field(
        resolver=board.board,
        description="The team's board: open tasks, and those done or cancelled within "
        "closedDays days (default 14).",
    )
    huddle_agenda: HuddleAgenda = strawberry.field(
        resolver=huddle_agenda,
        description="Overdue and blocked tasks, plans due for review within 7 days, and when "
        "the last huddle closed.",
    )


@strawberry.type
class TasksMutation:
    create_task: Task = strawberry.mutation(
        resolver=board.create_task,
        description="Put a task on the team's board (TODO). dueDate may be up to 30 days "
        "past, for a task written down late.",
    )
    move_task: Task = strawberry.mutation(
        resolver=board.move_task,
        description="Move a task to another status; BLOCKED needs a reason. DONE and "
        "CANCELLED tasks can be reopened (TODO or IN_PROGRESS).",
    )
    assign_task: Task = strawberry.mutation(
        resolver=board.assign_task, description="Give an open task to a team member."
    )


@strawberry.type
class TasksSubscription:
    board_changed: AsyncGenerator[BoardEvent, None] = strawberry.subscription(
        resolver=board.board_changed,
        description="Each change on the team's board, in order (members only).",
    )
    huddle_changed: AsyncGenerator[Huddle, None] = strawberry.subscription(
        resolver=board.huddle_changed,
        description="The huddle after each change to it or its action items (members only).",
    )
