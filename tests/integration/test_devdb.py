from __future__ import annotations

import asyncio
import os
import urllib.parse
import uuid

import asyncpg
import pytest

from services.devstack import devdb
from services.runtime.db import close_pool, create_pool


async def test_ensure_database_creates_one_database_for_concurrent_callers(pg_server_url):
    name = f"devdb_{uuid.uuid4().hex[:12]}"
    try:
        urls = await asyncio.gather(*(devdb.ensure_database(pg_server_url, name) for _ in range(4)))
        assert len(set(urls)) == 1
        conn = await asyncpg.connect(urls[0])
        try:
            assert await conn.fetchval("select current_database()") == name
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(pg_server_url)
        try:
            await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()


async def test_ensure_database_returns_the_url_of_an_existing_database(new_database):
    url = await new_database()
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    server = devdb.database_url(url, "postgres")
    assert await devdb.ensure_database(server, name) == url


@pytest.mark.parametrize("name", ['x"; drop database postgres; --', "Upper", "1st", "", "a" * 64])
async def test_ensure_database_refuses_a_name_that_is_not_a_plain_identifier(pg_server_url, name):
    with pytest.raises(ValueError, match="database name"):
        await devdb.ensure_database(pg_server_url, name)


def test_database_url_keeps_the_socket_folder_and_credentials():
    url = "postgresql://postgres:secret@/postgres?host=/tmp/pg"
    assert devdb.database_url(url, "wallet") == "postgresql://postgres:secret@/wallet?host=/tmp/pg"


def test_server_url_prefers_database_url_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.internal:5432/postgres")
    assert devdb.server_url(tmp_path / "unused") == "postgresql://db.internal:5432/postgres"
    assert not (tmp_path / "unused").exists()


def test_stopping_an_embedded_server_twice_is_harmless(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = tmp_path / "own"
    assert "host=" in devdb.server_url(data_dir)
    assert (data_dir / "postmaster.pid").exists()
    # Only this folder's server: the session's shared one must keep running.
    devdb.stop_embedded(data_dir)
    devdb.stop_embedded(data_dir)
    assert not (data_dir / "postmaster.pid").exists()


def test_pg_bin_dir_holds_pgbench_and_psql():
    for program in ("pgbench", "psql"):
        assert os.access(devdb.pg_bin_dir() / program, os.X_OK)


async def test_pool_reads_and_writes_jsonb_as_python_values(new_database):
    pool = await create_pool(await new_database(), max_size=2)
    try:
        document = {"amount": 500, "currency": "JPY", "tags": ["top-up"], "note": None}
        echoed = await pool.fetchval("select $1::jsonb", document)
        assert echoed == document
        assert await pool.fetchval("select $1::json", [1, 2]) == [1, 2]
    finally:
        await close_pool(pool)
