"""Configuration of the wallet service, read once from the environment."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from services.runtime.config import ServiceSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class WalletSettings(ServiceSettings):
    env_prefix: ClassVar[str] = "WALLET"
    default_grpc_port: ClassVar[int] = 50052
    default_health_port: ClassVar[int] = 50062
