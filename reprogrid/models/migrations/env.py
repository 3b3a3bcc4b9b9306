"""Alembic environment: runs migrations on the connection reprogrid hands over.

``reprogrid.models.db.upgrade`` passes a connection in ``config.attributes``;
run from the ``alembic`` command line, the URL comes from ``REPROGRID_DB``.
"""

from alembic import context
from sqlalchemy import create_engine

from reprogrid.config import Settings
from reprogrid.models.db import normalize_url
from reprogrid.models.tables import Base

target_metadata = Base.metadata


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = create_engine(normalize_url(Settings.from_env().db_url))
    with engine.begin() as own_connection:
        run_migrations(own_connection)
