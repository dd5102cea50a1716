"""Schema migrations (Alembic), applied when a store is opened."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text

__all__ = ["HEAD_REVISION", "current_revision", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions; a test checks that the two agree.
HEAD_REVISION = "0008"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` in one transaction.

    On SQLite, Alembic's batch mode rebuilds a table to change it (copy, drop, rename), which
    foreign-key enforcement would refuse while other tables reference it. Enforcement is off
    for the migration, and the foreign keys are checked before the transaction commits.

    Raises
    ------
    RuntimeError
        If, on SQLite, the migrated data violates a foreign key (nothing is committed).
    """
    config = alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        if sqlite:
            # PRAGMA foreign_keys is ignored inside a transaction: set it on the DBAPI
            # connection before SQLAlchemy begins one.
            driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(
                            f"migration to {revision}: foreign keys violated: {broken[:5]}"
                        )
        finally:
            if sqlite:
                driver.execute("PRAGMA foreign_keys=ON")
