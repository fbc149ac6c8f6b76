"""Settings and targets that let several replicas run behind a pooler."""

from __future__ import annotations

import pytest

from services.runtime.config import ConfigError, ServiceSettings, load_settings
from services.runtime.server import server_options
from services.runtime.tls import grpc_target

DIRECT = "postgresql://mamoru@db-rw:5432/wallet"
POOLED = "postgresql://mamoru@db-pooler-rw:5432/wallet"


def settings(**env: str) -> ServiceSettings:
    return load_settings(ServiceSettings, {"DATABASE_URL": POOLED, **env})


def test_a_separate_direct_url_means_the_main_one_is_a_transaction_pooler() -> None:
    pooled = settings(DATABASE_DIRECT_URL=DIRECT)
    assert pooled.behind_transaction_pooler()
    assert pooled.direct_database_url() == DIRECT


def test_without_a_direct_url_the_service_talks_to_postgresql_itself() -> None:
    plain = settings()
    assert not plain.behind_transaction_pooler()
    assert plain.direct_database_url() == POOLED
    assert not settings(DATABASE_DIRECT_URL=POOLED).behind_transaction_pooler()


def test_the_pooler_mode_can_be_forced_either_way() -> None:
    assert settings(
        DATABASE_POOLER="transaction", DATABASE_DIRECT_URL=DIRECT
    ).behind_transaction_pooler()
    assert not settings(
        DATABASE_POOLER="none", DATABASE_DIRECT_URL=DIRECT
    ).behind_transaction_pooler()
    with pytest.raises(ConfigError, match="DATABASE_POOLER"):
        settings(DATABASE_POOLER="session")
    with pytest.raises(ConfigError, match="needs DATABASE_DIRECT_URL"):
        settings(DATABASE_POOLER="transaction")
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL"):
        settings(DATABASE_DIRECT_URL="mysql://db")


def test_a_metrics_port_outside_the_port_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        load_settings(
            type("Wallet", (ServiceSettings,), {"env_prefix": "WALLET"}),
            {"DATABASE_URL": POOLED, "WALLET_METRICS_PORT": "70000"},
        )


def test_servers_age_out_connections_so_clients_rebalance() -> None:
    options = dict(server_options(settings(GRPC_MAX_CONNECTION_AGE_SECONDS="60")))
    assert options["grpc.max_connection_age_ms"] == 60_000
    assert options["grpc.max_connection_age_grace_ms"] == 30_000


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1:50052", "127.0.0.1:50052"),
        ("127.0.0.1:50052,127.0.0.1:50152", "ipv4:127.0.0.1:50052,127.0.0.1:50152"),
        (" 127.0.0.1:1 , 127.0.0.1:2 ", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("ipv4:10.0.0.1:1,10.0.0.2:1", "ipv4:10.0.0.1:1,10.0.0.2:1"),
        (
            "dns:///wallet.mamoru.svc.cluster.local:50052",
            "dns:///wallet.mamoru.svc.cluster.local:50052",
        ),
    ],
)
def test_an_address_may_name_one_replica_a_list_or_a_headless_service(
    address: str, target: str
) -> None:
    assert grpc_target(address) == target


def test_outbox_retention_is_thirty_days_unless_set_and_never_below_one_day() -> None:
    assert settings().outbox_retention_days == 30
    assert settings(OUTBOX_RETENTION_DAYS="7").outbox_retention_days == 7
    with pytest.raises(ConfigError, match="OUTBOX_RETENTION_DAYS"):
        settings(OUTBOX_RETENTION_DAYS="0")
