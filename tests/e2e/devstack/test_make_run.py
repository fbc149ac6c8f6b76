"""`make run` as a newcomer meets it: ports from the environment, a demo seeded
once, services that come back when they die, and the README's walkthrough.

The stack runs as `make run` runs it (``python -m services.devstack``), on ports
these tests pick and on a PostgreSQL of its own under a temporary MAMORU_VAR.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack.stack import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("identity", "wallet", "risk", "notify")
# A cold start creates a database cluster and four databases; a busy machine is slow.
START_WITHIN = 240.0
DEMO_EMAIL = "hanako.demo@example.jp"


class MakeRun:
    """``python -m services.devstack`` in a process of its own, its output in a file."""

    def __init__(self, var: Path) -> None:
        self.var = var
        self.env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        self.env.update(MAMORU_VAR=str(var), LOG_FORMAT="json")
        self.env.pop("MAMORU_TLS_DIR", None)
        for name in SERVICES:
            self.env[f"{name.upper()}_GRPC_PORT"] = str(free_port())
            self.env[f"{name.upper()}_HEALTH_PORT"] = str(free_port())
            # Every port, metrics included: another run may be on this machine.
            self.env[f"{name.upper()}_METRICS_PORT"] = str(free_port())
        for variable in (
            "SMTP_PORT",
            "WALLET_SANDBOX_PROCESSOR_PORT",
            "WALLET_SANDBOX_POINTS_PORT",
            "GATEWAY_GRPC_PORT",
            "GATEWAY_HEALTH_PORT",
            "GATEWAY_HTTP_PORT",
            "CONSOLE_GRPC_PORT",
            "CONSOLE_HEALTH_PORT",
            "CONSOLE_HTTP_PORT",
            "WEB_GRPC_PORT",
            "WEB_HEALTH_PORT",
            "WEB_HTTP_PORT",
            "GATEWAY_METRICS_PORT",
            "WEB_METRICS_PORT",
            "CONSOLE_METRICS_PORT",
        ):
            self.env[variable] = str(free_port())
        self.process: subprocess.Popen[bytes] | None = None
        self.output = var.parent / "make-run.out"

    def port(self, variable: str) -> int:
        return int(self.env[variable])

    def start(self) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        earlier = len(self.text()) if self.output.exists() else 0
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.devstack"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.wait_for_output("Ctrl-C stops everything.", START_WITHIN, after=earlier)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_output(self, marker: str, within: float, after: int = 0) -> None:
        """Wait until ``marker`` appears in the output past offset ``after``."""
        wait_until(
            lambda: marker in self.text()[after:],
            within,
            f"{marker!r} in the output of make run",
            lambda: self.text()[-3000:],
            alive=self.process,
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # A stack that could not stop cleanly must not leave its services behind.
        for child in children:
            if child.is_running():
                child.kill()

    def service_pid(self, name: str) -> int:
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if f"services.{name}" in child.cmdline():
                return int(child.pid)
        raise AssertionError(f"no {name} process under make run")


def wait_until(
    condition: Callable[[], bool],
    within: float,
    what: str,
    context: Callable[[], str] = lambda: "",
    alive: subprocess.Popen[bytes] | None = None,
) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"make run exited ({alive.returncode}):\n{context()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {within:.0f} s:\n{context()}")
        time.sleep(0.2)
    return True


def serving(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    running = MakeRun(tmp_path_factory.mktemp("make-run") / "var")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_make_run_binds_the_ports_the_environment_names(make_run: MakeRun) -> None:
    for name in SERVICES:
        grpc_port = make_run.port(f"{name.upper()}_GRPC_PORT")
        health_port = make_run.port(f"{name.upper()}_HEALTH_PORT")
        assert serving(health_port), name
        assert f"127.0.0.1:{grpc_port}" in make_run.text()
        with socket.create_connection(("127.0.0.1", grpc_port), timeout=5):
            pass
    with socket.create_connection(("127.0.0.1", make_run.port("SMTP_PORT")), timeout=5) as smtp:
        assert smtp.recv(100).startswith(b"220")
    assert f"127.0.0.1:{make_run.port('SMTP_PORT')}" in make_run.text()
    pages = f"http://localhost:{make_run.port('WEB_HTTP_PORT')}"
    assert f"open {pages} in a browser" in make_run.text()
    # A mail's link to 127.0.0.1 lands on the pages' one origin (cookies, passkeys).
    link = f"http://127.0.0.1:{make_run.port('WEB_HTTP_PORT')}/reset-password?token=t"
    reply = httpx.get(link, timeout=10)
    assert reply.status_code == 308
    assert reply.headers["location"] == f"{pages}/reset-password?token=t"


def _readme_walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)```\n<!-- /walkthrough -->", readme, re.S)
    assert block, "the README lost its walkthrough block"
    return block.group(1)


def test_the_readme_walkthrough_pays_at_the_demo_register_and_reads_every_mail(
    make_run: MakeRun,
) -> None:
    done = subprocess.run(  # noqa: S603 - the README's own commands
        ["bash", "-e", "-o", "pipefail", "-c", _readme_walkthrough()],  # noqa: S607
        cwd=ROOT, env=make_run.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    balances = re.findall(r'"amountMinor": "(\d+)"', done.stdout)
    assert balances[:1] and balances[-1:], done.stdout
    assert int(balances[0]) - int(balances[-1]) == 1_000, done.stdout
    # The mailbox, decoded: the verification code, the payment and the refund.
    assert "確認コード" in done.stdout
    assert "お支払いのお知らせ" in done.stdout
    assert "¥1,280" in done.stdout and "¥280" in done.stdout
    assert re.search(r"Latest codes.*\n  \d{6} ", done.stdout), done.stdout


def test_make_run_prints_the_console_and_its_operator_signs_in(make_run: MakeRun) -> None:
    url = f"http://127.0.0.1:{make_run.port('CONSOLE_HTTP_PORT')}"
    banner = rf"operators' console +{re.escape(url)} +\(sign in as (\S+), password ([^;\s]+);"
    printed = re.search(banner, make_run.text())
    assert printed, make_run.text()[-3000:]
    name, password = printed.groups()
    with httpx.Client(base_url=url, timeout=30) as http:
        form = http.get("/sign-in")
        token = re.search(r'name="sign_in_token" value="([^"]+)"', form.text)
        assert token, form.text
        answer = http.post(
            "/sign-in",
            data={"name": name, "password": password, "sign_in_token": token.group(1)},
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/alerts"
        assert "Signed in as" in http.get("/policy").text


@pytest.mark.parametrize("name", ["wallet", "gateway", "web", "console"])
def test_a_killed_service_is_reported_and_comes_back_serving(make_run: MakeRun, name: str) -> None:
    before = len(make_run.text())
    health = make_run.port(f"{name.upper()}_HEALTH_PORT")
    victim = make_run.service_pid(name)
    os.kill(victim, signal.SIGKILL)
    make_run.wait_for_output(f"{name} exited with code", 60, after=before)
    make_run.wait_for_output(f"{name} is serving again", 120, after=before)
    assert make_run.service_pid(name) != victim
    wait_until(lambda: serving(health), 30, f"{name} SERVING after its restart")


def test_a_second_start_keeps_the_demo_and_seeds_nothing(make_run: MakeRun) -> None:
    demo_file = make_run.var / "demo.json"
    seeded = demo_file.read_text()
    phone_key = (make_run.var / "demo-device.pem").read_bytes()
    mails_before = _mails_to(make_run.var, DEMO_EMAIL)
    partner = _printed_partner(make_run.text())
    sandbox = (make_run.var / "gateway-demo.json").read_text()
    make_run.stop()
    before = len(make_run.text())
    make_run.start()
    assert "Demo already seeded" in make_run.text()[before:]
    assert "Seeding the demo" not in make_run.text()[before:]
    assert demo_file.read_text() == seeded
    # The phone keeps the key identity knows it by, readable by its owner alone.
    assert (make_run.var / "demo-device.pem").read_bytes() == phone_key
    assert (make_run.var / "demo-device.pem").stat().st_mode & 0o077 == 0
    # No second registration: not one more mail reached the demo person.
    assert _mails_to(make_run.var, DEMO_EMAIL) == mails_before
    # The partner quickstart names the same partner, kept as it was.
    assert _printed_partner(make_run.text()[before:]) == partner
    assert (make_run.var / "gateway-demo.json").read_text() == sandbox


def _printed_partner(output: str) -> tuple[str, str]:
    """The client id and secret the last printed partner quickstart exports."""
    printed = re.findall(r"export CLIENT_ID=(\S+) CLIENT_SECRET=(\S+)", output)
    assert printed, output[-3000:]
    client_id, secret = printed[-1]
    return str(client_id), str(secret)


def _mails_to(var: Path, address: str) -> int:
    from services.devstack.mailbox_view import read_mailbox

    return sum(address in mail.to for mail in read_mailbox(var / "mail"))
