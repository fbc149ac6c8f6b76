"""Configuration of the notify service, read once from the environment."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from services.runtime.config import ServiceSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotifySettings(ServiceSettings):
    env_prefix: ClassVar[str] = "NOTIFY"
    default_grpc_port: ClassVar[int] = 50054
    default_health_port: ClassVar[int] = 50064
