"""Numbered SQL migrations for the Driftline ClickHouse schema.

Files ``sinks/sql/NNN_name.sql`` are applied in order of ``NNN``. Each file holds statements
separated by a ``;`` at the end of a line, with two placeholders substituted here (never from
user input): ``{database}`` (validated identifier) and ``{retention_days:UInt32}`` (validated
int). After a file's statements succeed, a row ``(NNN, name)`` goes into ``schema_version``.

Guarantees
----------
* Idempotent: every statement uses ``IF NOT EXISTS``, or is guarded by a ``-- only if: SELECT ...``
  comment line right above it (the statement runs only when that query returns a non-zero first
  value), so a crash between a file's statements and its version row only means the file is
  re-run, harmlessly, next time. Guards make one-way steps such as ``EXCHANGE TABLES`` safe to
  repeat (migration 003 swaps ``outcomes`` for a ReplacingMergeTree only while the old engine is
  still in place).
* Ordered: a database at version ``k`` gets exactly the files numbered ``> k``, ascending.
* Not concurrent: two processes migrating the same database at once may both record a version
  row; the recorded version is ``max(version)`` so that is harmless too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SQL_DIR = Path(__file__).with_name("sql")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# a statement ends with ';' at the end of a line (comments never end with ';' in our files)
_SPLIT_RE = re.compile(r";[ \t]*(?:\r?\n|$)")
# "-- only if: SELECT ..." right above a statement: run it only when that query's first value is non-zero
_GUARD_RE = re.compile(r"^[ \t]*--[ \t]*only if:[ \t]*(.+)$", re.MULTILINE)

MAX_RETENTION_DAYS = 36500


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    path: Path

    def statements(self, database: str, retention_days: int) -> list[str]:
        """Return the file's statements with placeholders substituted.

        Parameters
        ----------
        database : str
            Database name; must be a plain identifier.
        retention_days : int
            TTL in days, ``1 <= retention_days <= 36500``.

        Raises
        ------
        ValueError
            If either parameter is invalid.
        """
        return [stmt for _, stmt in self.guarded_statements(database, retention_days)]

    def guarded_statements(
        self, database: str, retention_days: int
    ) -> list[tuple[str | None, str]]:
        """Return ``(guard, statement)`` pairs; ``guard`` is the ``-- only if:`` query or None."""
        database = validate_database(database)
        days = validate_retention_days(retention_days)
        text = self.path.read_text(encoding="utf-8")
        text = text.replace("{database}", database).replace("{retention_days:UInt32}", str(days))
        out: list[tuple[str | None, str]] = []
        for chunk in _SPLIT_RE.split(text):
            body = "\n".join(
                line for line in chunk.splitlines() if not line.strip().startswith("--")
            ).strip()
            if body:
                guards = [m.group(1).strip() for m in _GUARD_RE.finditer(chunk)]
                out.append((guards[-1] if guards else None, chunk.strip()))
        return out


def validate_database(database: str) -> str:
    """Return ``database`` if it is a safe identifier, else raise ``ValueError``."""
    if not isinstance(database, str) or not _IDENT_RE.match(database):
        raise ValueError(
            f"database: {database!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"
        )
    return database


def validate_retention_days(retention_days: int) -> int:
    """Return ``retention_days`` as an int in ``[1, 36500]``, else raise ``ValueError``."""
    if isinstance(retention_days, bool) or not isinstance(retention_days, int):
        raise ValueError(f"retention_days: expected an int, got {retention_days!r}")
    if not 1 <= retention_days <= MAX_RETENTION_DAYS:
        raise ValueError(f"retention_days: {retention_days} not in [1, {MAX_RETENTION_DAYS}]")
    return retention_days


def available_migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """List the migration files in ascending version order.

    Raises
    ------
    ValueError
        If two files share a version number.
    """
    found: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise ValueError(f"two migrations numbered {version:03d} in {sql_dir}")
        found[version] = Migration(version, m.group(2), path)
    return [found[v] for v in sorted(found)]


def latest_version(sql_dir: Path = SQL_DIR) -> int:
    """Return the highest migration number shipped with this package."""
    migrations = available_migrations(sql_dir)
    return migrations[-1].version if migrations else 0


def current_version(client: Any, database: str = "driftline") -> int:
    """Return the recorded schema version of ``database`` (0 when it has none yet)."""
    database = validate_database(database)
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'schema_version'",
        parameters={"db": database},
    ).result_rows[0][0]
    if not exists:
        return 0
    rows = client.query(f"SELECT max(version) FROM {database}.schema_version").result_rows
    return int(rows[0][0] or 0)


def migrate(
    client: Any,
    *,
    database: str = "driftline",
    retention_days: int = 90,
    target: int | None = None,
    sql_dir: Path = SQL_DIR,
) -> list[int]:
    """Apply, in order, every migration newer than the recorded version.

    Parameters
    ----------
    client : clickhouse_connect Client
        A writable client (chdb or HTTP).
    database : str
        Target database (created by migration 1).
    retention_days : int
        TTL substituted into the DDL; only affects tables created by this call.
    target : int, optional
        Stop after this version (tests use it to build an old schema); default: newest.
    sql_dir : Path
        Where the numbered ``.sql`` files live.

    Returns
    -------
    list[int]
        The versions applied by this call (empty when already up to date).
    """
    database = validate_database(database)
    validate_retention_days(retention_days)
    have = current_version(client, database)
    applied = []
    for mig in available_migrations(sql_dir):
        if mig.version <= have or (target is not None and mig.version > target):
            continue
        for guard, stmt in mig.guarded_statements(database, retention_days):
            if guard is not None:
                rows = client.query(guard).result_rows
                if not (rows and rows[0] and rows[0][0]):
                    continue
            client.command(stmt)
        client.insert(
            f"{database}.schema_version",
            data=[[mig.version], [mig.name]],
            column_names=["version", "name"],
            column_oriented=True,
        )
        applied.append(mig.version)
    return applied
