"""Alembic environment: one migration history for the catalog, the log and the editors."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

import bandit.personalizer  # noqa: F401  (its tables are in LogBase.metadata)
from artwork.models import CatalogBase
from bandit.models import LogBase
from web.models import AuthBase

config = context.config
target_metadata = [CatalogBase.metadata, LogBase.metadata, AuthBase.metadata]


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section, {}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # Batch mode lets ALTERs work on SQLite by copying the table.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
