"""The services' and the owner's database URLs are the same server and database as the
one they are made from, with another login."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from services.common import db_roles


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:45215/postgres",
        "postgresql://admin:secret@db.example.org/carecoord?sslmode=verify-full",
        "postgresql://postgres@[::1]:5432/care",
    ],
)
def test_a_role_url_keeps_the_server_database_and_options(url: str) -> None:
    made = urlsplit(db_roles.with_role(url, db_roles.APP_ROLE, "p@ss:w/rd?#%"))
    given = urlsplit(url)

    assert (made.scheme, made.hostname, made.port, made.path, made.query) == (
        given.scheme,
        given.hostname,
        given.port,
        given.path,
        given.query,
    )
    assert made.username == db_roles.APP_ROLE
    assert made.password is not None and unquote(made.password) == "p@ss:w/rd?#%"
