from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.runtime.migrations import (
    RUNTIME_MIGRATIONS,
    MigrationError,
    apply_migrations,
    migrate,
)

STEPS = {
    # The pause keeps the first file running while a concurrent migrator arrives.
    "0001_create_steps.sql": "create table steps (n serial primary key, name text not null);\n"
    "select pg_sleep(0.3);\n"
    "insert into steps (name) values ('first');\n",
    "0002_second.sql": "insert into steps (name) values ('second');\n",
    "0010_tenth.sql": "insert into steps (name) values ('tenth');\n",
}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return folder


@pytest_asyncio.fixture
async def conn(new_database):
    connection = await asyncpg.connect(await new_database("migrations"))
    yield connection
    await connection.close()


async def steps(conn) -> list[str]:
    return [row["name"] for row in await conn.fetch("select name from steps order by n")]


async def test_migrations_apply_in_number_order_and_only_once(conn, tmp_path):
    folder = write(tmp_path / "wallet", STEPS)

    first = await apply_migrations(conn, "wallet", folder)
    again = await apply_migrations(conn, "wallet", folder)

    assert first == [
        "wallet/0001_create_steps.sql",
        "wallet/0002_second.sql",
        "wallet/0010_tenth.sql",
    ]
    assert again == []
    assert await steps(conn) == ["first", "second", "tenth"]
    recorded = await conn.fetch(
        "select version, name, length(checksum) as checksum_length from schema_migrations"
        " where component = 'wallet' order by version"
    )
    assert [(r["version"], r["name"], r["checksum_length"]) for r in recorded] == [
        (1, "0001_create_steps.sql", 64),
        (2, "0002_second.sql", 64),
        (10, "0010_tenth.sql", 64),
    ]


async def test_a_new_file_is_applied_on_the_next_start(conn, tmp_path):
    folder = write(tmp_path / "wallet", STEPS)
    await apply_migrations(conn, "wallet", folder)
    write(folder, {"0011_eleventh.sql": "insert into steps (name) values ('eleventh');"})

    assert await apply_migrations(conn, "wallet", folder) == ["wallet/0011_eleventh.sql"]
    assert await steps(conn) == ["first", "second", "tenth", "eleventh"]


async def test_replicas_migrating_at_once_apply_each_file_once(new_database, tmp_path):
    url = await new_database("migrations")
    folder = write(tmp_path / "wallet", STEPS)
    replicas = [await asyncpg.connect(url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, "wallet", folder) for c in replicas))
        applied = [name for result in results for name in result]
        assert sorted(applied) == sorted(set(applied))
        assert set(applied) == {
            "runtime/0001_outbox.sql",
            "runtime/0002_outbox_purge_indexes.sql",
            "wallet/0001_create_steps.sql",
            "wallet/0002_second.sql",
            "wallet/0010_tenth.sql",
        }
        assert await steps(replicas[0]) == ["first", "second", "tenth"]
    finally:
        for c in replicas:
            await c.close()


async def test_a_migration_changed_after_it_was_applied_stops_startup(conn, tmp_path):
    folder = write(tmp_path / "wallet", STEPS)
    await apply_migrations(conn, "wallet", folder)
    write(folder, {"0002_second.sql": "insert into steps (name) values ('edited');\n"})
    write(folder, {"0011_eleventh.sql": "insert into steps (name) values ('eleventh');"})

    with pytest.raises(MigrationError) as raised:
        await apply_migrations(conn, "wallet", folder)

    message = str(raised.value)
    assert "wallet" in message
    assert "0002_second.sql" in message
    assert "changed after it was applied" in message
    # Nothing further ran: the service must not start on a database it cannot trust.
    assert await steps(conn) == ["first", "second", "tenth"]


async def test_an_applied_migration_missing_from_the_folder_stops_startup(conn, tmp_path):
    folder = write(tmp_path / "wallet", STEPS)
    await apply_migrations(conn, "wallet", folder)
    (folder / "0002_second.sql").unlink()

    with pytest.raises(MigrationError, match=r"wallet: migration 0002_second\.sql .* missing"):
        await apply_migrations(conn, "wallet", folder)


async def test_two_files_with_the_same_number_stop_startup(conn, tmp_path):
    folder = write(tmp_path / "wallet", {**STEPS, "0002_other.sql": "select 1;"})

    with pytest.raises(MigrationError, match=r"wallet: .*0002_other\.sql.*0002_second\.sql"):
        await apply_migrations(conn, "wallet", folder)
    assert await conn.fetchval("select to_regclass('steps')") is None


async def test_a_misnamed_sql_file_stops_startup_instead_of_being_skipped(conn, tmp_path):
    folder = write(tmp_path / "wallet", {**STEPS, "12_limits.sql": "select 1;"})

    with pytest.raises(MigrationError, match=r"12_limits\.sql must be named NNNN_description\.sql"):
        await apply_migrations(conn, "wallet", folder)


async def test_a_new_file_numbered_below_an_applied_one_stops_startup(conn, tmp_path):
    folder = write(tmp_path / "wallet", STEPS)
    await apply_migrations(conn, "wallet", folder)
    write(folder, {"0005_late_branch.sql": "insert into steps (name) values ('late');"})

    with pytest.raises(MigrationError, match=r"0005_late_branch\.sql is numbered below"):
        await apply_migrations(conn, "wallet", folder)
    assert await steps(conn) == ["first", "second", "tenth"]


async def test_a_failing_migration_is_rolled_back_and_named(conn, tmp_path):
    folder = write(
        tmp_path / "wallet",
        {
            "0001_ok.sql": "create table kept (id int);",
            "0002_broken.sql": "create table half_done (id int);\nselect * from no_such_table;",
        },
    )

    with pytest.raises(MigrationError, match=r"wallet: migration .*0002_broken\.sql failed"):
        await apply_migrations(conn, "wallet", folder)

    assert await conn.fetchval("select to_regclass('kept')::text") == "kept"
    assert await conn.fetchval("select to_regclass('half_done')") is None
    versions = await conn.fetch("select version from schema_migrations where component = 'wallet'")
    assert [row["version"] for row in versions] == [1]


async def test_components_keep_separate_version_numbers(conn, tmp_path):
    wallet = write(tmp_path / "wallet", {"0001_a.sql": "create table wallet_a (id int);"})
    risk = write(tmp_path / "risk", {"0001_a.sql": "create table risk_a (id int);"})

    assert await apply_migrations(conn, "wallet", wallet) == ["wallet/0001_a.sql"]
    assert await apply_migrations(conn, "risk", risk) == ["risk/0001_a.sql"]


async def test_migrate_applies_the_runtime_migrations_before_the_service_ones(conn, tmp_path):
    # The service file depends on the runtime's outbox table existing already.
    folder = write(
        tmp_path / "notify",
        {
            "0001_dead_letters.sql": "create view dead_letters as"
            " select * from outbox where state = 'dead';"
        },
    )

    applied = await migrate(conn, "notify", folder)

    runtime_files = sorted(path.name for path in RUNTIME_MIGRATIONS.glob("*.sql"))
    assert applied == [f"runtime/{name}" for name in runtime_files] + [
        "notify/0001_dead_letters.sql"
    ]
    assert await migrate(conn, "notify", folder) == []


async def test_migrations_refuse_a_connection_inside_a_transaction(conn, tmp_path):
    folder = write(tmp_path / "wallet", STEPS)
    async with conn.transaction():
        with pytest.raises(MigrationError, match="outside any transaction"):
            await apply_migrations(conn, "wallet", folder)


async def test_a_missing_migrations_folder_stops_startup(conn, tmp_path):
    with pytest.raises(MigrationError, match=r"risk: migrations folder .* does not exist"):
        await apply_migrations(conn, "risk", tmp_path / "nowhere")
