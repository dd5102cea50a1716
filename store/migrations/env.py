"""Alembic environment: migrations run on a connection handed over by matdx.store.migrate."""

from alembic import context

from matdx.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run matdx store migrations through matdx.store.migrate.upgrade()")

# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
