"""Merchants and their stores, as the wallet knows them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Merchant:
    id: uuid.UUID
    name: str
    category: str


@dataclass(frozen=True)
class StoreRow:
    id: uuid.UUID
    merchant_id: uuid.UUID
    name: str
