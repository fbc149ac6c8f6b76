"""Configuration of the risk service, read once from the environment."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from services.runtime.config import ServiceSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class RiskSettings(ServiceSettings):
    env_prefix: ClassVar[str] = "RISK"
    default_grpc_port: ClassVar[int] = 50053
    default_health_port: ClassVar[int] = 50063
