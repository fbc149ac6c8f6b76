"""Which failures read as "retry later" (UNAVAILABLE, ABORTED) and which as a bug (INTERNAL)."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from services.runtime.errors import _deserves_attention, transient_kind


def _peer_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "reset by peer"),
        FileNotFoundError(2, "no such socket"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.InterfaceError("pool is closing"),
    ],
)
def test_a_database_that_is_away_is_storage_unavailable(error: BaseException):
    assert transient_kind(error) == "STORAGE_UNAVAILABLE"


def test_a_peer_that_is_away_is_peer_unavailable_but_a_peer_refusal_is_not():
    assert transient_kind(_peer_error(grpc.StatusCode.UNAVAILABLE)) == "PEER_UNAVAILABLE"
    assert transient_kind(_peer_error(grpc.StatusCode.DEADLINE_EXCEEDED)) == "PEER_UNAVAILABLE"
    assert transient_kind(_peer_error(grpc.StatusCode.INVALID_ARGUMENT)) is None


def test_a_transaction_postgres_rolled_back_is_a_conflict_to_retry():
    assert transient_kind(asyncpg.SerializationError("could not serialize")) == (
        "TRANSACTION_CONFLICT"
    )
    assert transient_kind(asyncpg.DeadlockDetectedError("deadlock")) == "TRANSACTION_CONFLICT"


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        KeyError("x"),
        asyncpg.UndefinedColumnError("column does not exist"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        PermissionError(13, "permission denied"),
        IsADirectoryError(21, "is a directory"),
    ],
)
def test_a_bug_stays_a_bug(error: BaseException):
    assert transient_kind(error) is None


def test_a_wrapped_outage_is_an_outage_and_a_bug_beside_one_is_a_bug():
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError as cause:
            raise RuntimeError("storing the payment failed") from cause
    except RuntimeError as wrapped:
        assert transient_kind(wrapped) == "STORAGE_UNAVAILABLE"
    outages = ExceptionGroup("all away", [ConnectionResetError(), asyncpg.AdminShutdownError()])
    assert transient_kind(outages) == "STORAGE_UNAVAILABLE"
    mixed = ExceptionGroup("mixed", [ConnectionResetError(), ValueError("bug")])
    assert transient_kind(mixed) is None


def test_a_deadlock_or_a_timeout_gets_retry_advice_and_is_logged_as_an_error():
    """Lock-order bugs and stuck locks must not hide among outages: the caller is told
    to retry, and the log carries an error with the traceback."""

    assert transient_kind(TimeoutError()) == "STORAGE_UNAVAILABLE"
    assert _deserves_attention(asyncpg.DeadlockDetectedError("deadlock"))
    assert _deserves_attention(TimeoutError())
    assert not _deserves_attention(ConnectionResetError(104, "reset"))
    assert not _deserves_attention(asyncpg.SerializationError("could not serialize"))
