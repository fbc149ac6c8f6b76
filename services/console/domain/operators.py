"""The operators who may sign in to the console, and their argon2id password hashes.

Operators are not people's accounts: identity has no operator sign-in, so the
console keeps its own short list, given as a secret (``CONSOLE_OPERATORS``).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

# What risk accepts as an operator's name in ``x-operator`` (see risk's actor_of).
OPERATOR_NAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
# The identity service's parameters: one hash costs the same here as there.
HASHER = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, type=argon2.Type.ID)
# Checked when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = HASHER.hash("mamoru console: no such operator")


@dataclass(frozen=True)
class OperatorBook:
    hashes: dict[str, str]

    def names(self) -> list[str]:
        return sorted(self.hashes)

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s; always one argon2 verification (slow: thread it)."""
        known = self.hashes.get(name)
        try:
            HASHER.verify(known or _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return False
        return known is not None


def parse_operators(text: str) -> OperatorBook:
    hashes: dict[str, str] = {}
    for entry in filter(None, re.split(r"[;\s]+", text)):
        name, sep, hashed = entry.partition(":")
        if not sep or not OPERATOR_NAME.match(name):
            raise ValueError("each entry is NAME:HASH, the name 1 to 64 of A-Z a-z 0-9 . _ @ + -")
        if not hashed.startswith("$argon2id$"):
            raise ValueError(f"the hash of {name} is not an argon2id hash")
        if name in hashes:
            raise ValueError(f"{name} is listed twice")
        hashes[name] = hashed
    return OperatorBook(hashes)


def entry(name: str, password: str) -> str:
    if not OPERATOR_NAME.match(name):
        raise ValueError("the name must be 1 to 64 of A-Z a-z 0-9 . _ @ + -")
    if len(password) < 12:
        raise ValueError("the password must have at least 12 characters")
    return f"{name}:{HASHER.hash(password)}"


def hash_entry(argv: Sequence[str], stdin: TextIO, out: TextIO) -> int:
    """``hash-password NAME``: the password from stdin (or a prompt), the entry to stdout."""
    if len(argv) != 1:
        print("usage: python -m services.console hash-password NAME < password", file=out)
        return 2
    password = getpass.getpass("password: ") if stdin.isatty() else stdin.readline().rstrip("\n")
    try:
        print(entry(argv[0], password), file=out)
    except ValueError as error:
        print(f"hash-password: {error}", file=out)
        return 2
    return 0
