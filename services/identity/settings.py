"""Configuration of the identity service, read once from the environment."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from services.runtime.config import ServiceSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdentitySettings(ServiceSettings):
    env_prefix: ClassVar[str] = "IDENTITY"
    default_grpc_port: ClassVar[int] = 50051
    default_health_port: ClassVar[int] = 50061
