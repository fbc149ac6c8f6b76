"""A small service built on the shared runtime, run as its own process by the
lifecycle tests: one slow RPC (to prove SIGTERM drains it) and one that
validates its input (to prove the error mapping). Its migrations folder comes
from the environment so a test can change a file after it was applied."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import grpc

from services.runtime.access import allow
from services.runtime.config import ServiceSettings, env
from services.runtime.server import Resources, ServiceApp, main
from services.runtime.validation import Violations

SERVICE = "mamoru.lifecycle.v1.LifecycleService"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LifecycleSettings(ServiceSettings):
    env_prefix: ClassVar[str] = "LIFECYCLE"
    migrations: Path = env("LIFECYCLE_MIGRATIONS", help="migrations folder")


async def _sleep(request: bytes, context: Any) -> bytes:
    seconds = float(request.decode() or "0")
    # The file tells the test the call is in hand, so it can signal the process
    # mid-call however long the call took to arrive.
    mark = os.environ.get("LIFECYCLE_SLEEP_MARK")
    if mark:
        await asyncio.to_thread(Path(mark).touch)
    await asyncio.sleep(seconds)
    return b"slept"


async def _echo_name(request: bytes, context: Any) -> bytes:
    body = json.loads(request or b"{}")
    check = Violations()
    name = check.text("name", body.get("name", ""), max_length=10, required=True)
    check.uuid("account_id", body.get("account_id", ""))
    check.raise_if_any()
    return name.encode()


def _add(servicer: object, server: grpc.aio.Server) -> None:
    handlers = {
        "Sleep": grpc.unary_unary_rpc_method_handler(_sleep),
        "EchoName": grpc.unary_unary_rpc_method_handler(_echo_name),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


async def build(resources: Resources) -> ServiceApp:
    return ServiceApp(
        servicers=[(_add, object())],
        service_names=[SERVICE],
        access={
            f"/{SERVICE}/Sleep": allow("operator"),
            f"/{SERVICE}/EchoName": allow("operator"),
        },
    )


if __name__ == "__main__":
    import os

    main("lifecycle", LifecycleSettings, Path(os.environ["LIFECYCLE_MIGRATIONS"]), build)
