"""`make run REPLICAS=n`: ports per replica, the clients' target, and the banner."""

from __future__ import annotations

from pathlib import Path

from services.devstack.__main__ import _banner
from services.devstack.console import ConsoleLogin
from services.devstack.gateway import plan_gateway
from services.devstack.smtp import LocalSmtpServer
from services.devstack.stack import SERVICES, LocalStack
from services.gateway.settings import GatewaySettings


def planned(replicas: int) -> LocalStack:
    """A stack laid out as `make run` lays it out, without starting anything."""
    stack = LocalStack(var_dir=Path("var"), fixed_ports=True, replicas=replicas)
    stack.smtp = LocalSmtpServer(port=2525)
    for name in SERVICES:
        for replica in range(1, replicas + 1):
            proc = stack.plan(name, replica)
            stack.processes[proc.key] = proc
    return stack


def test_clients_of_a_replicated_service_are_given_every_replica() -> None:
    stack = planned(2)
    assert stack.address_of("wallet") == "127.0.0.1:50052,127.0.0.1:50152"
    assert planned(1).address_of("wallet") == "127.0.0.1:50052"


def test_no_two_processes_share_a_port() -> None:
    stack = planned(3)
    ports = [
        port
        for proc in stack.processes.values()
        for port in (proc.grpc_port, proc.health_port, proc.metrics_port)
    ]
    assert len(ports) == len(set(ports)) == 3 * 3 * len(SERVICES)


def test_make_run_prints_every_replica_with_its_metrics_address() -> None:
    banner = _banner(planned(2), Path("var"))
    for proc in planned(2).processes.values():
        assert f"{proc.key} " in banner
        assert f"http://127.0.0.1:{proc.metrics_port}/metrics" in banner


def test_make_run_gives_the_gateway_its_documented_metrics_port_and_prints_it() -> None:
    stack = planned(1)
    gateway, http_port = plan_gateway(stack)
    stack.processes[gateway.key] = gateway
    assert gateway.metrics_port == GatewaySettings.default_metrics_port == 9465
    ports = [
        port
        for proc in stack.processes.values()
        for port in (proc.grpc_port, proc.health_port, proc.metrics_port)
    ]
    assert len([*ports, http_port]) == len({*ports, http_port})
    assert "http://127.0.0.1:9465/metrics" in _banner(stack, Path("var"))


def test_make_run_prints_where_the_console_is_and_whom_to_sign_in_as() -> None:
    login = ConsoleLogin("http://127.0.0.1:8081", "demo-operator", "s3cret-for-the-demo")
    banner = _banner(planned(1), Path("var"), login)
    assert "operators' console          http://127.0.0.1:8081" in banner
    assert "sign in as demo-operator, password s3cret-for-the-demo" in banner
