"""API keys: parsed from the configuration as sha256 hashes with scopes, checked in constant time.

An entry reads ``<sha256 of the key, 64 hex digits>:<scope>[+<scope>...]``, e.g.
``9f86d081...0f00a08:read+write``. Entries are separated by commas, spaces or new lines; in a
keys file, ``#`` starts a comment. The service never sees or stores a key in clear: it hashes
what a client presents and compares the hash with every configured one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SCOPES = ("read", "write")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ApiKey:
    sha256: str
    scopes: frozenset[str]

    @property
    def key_id(self) -> str:
        """A short, non-secret name for logs: the first 8 hex digits of the hash."""
        return self.sha256[:8]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A random key: 32 bytes, URL-safe."""
    return "lloyd_" + secrets.token_urlsafe(32)


def parse_api_keys(text: str) -> list[ApiKey]:
    """Every entry of ``text``; ``ValueError`` naming the first bad one."""
    keys: list[ApiKey] = []
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    entries = (e for line in lines for e in re.split(r"[,\s]+", line) if e)
    for number, entry in enumerate(entries, start=1):
        digest, _, scopes_text = entry.partition(":")
        digest = digest.lower()
        if not _HEX64.match(digest):
            # Never echo the entry: it may be a key pasted in clear.
            raise ValueError(
                f"API key entry {number}: expected the key's sha256 as 64 hex digits "
                "(`python -m app hash-key` prints it), never the key itself"
            )
        parts = scopes_text.split("+")
        scopes = frozenset(parts)
        if not set(parts) <= set(SCOPES):
            raise ValueError(
                f"API key {digest[:8]}: scopes must be one or more of {'+'.join(SCOPES)} "
                f"joined by '+', got {scopes_text!r}"
            )
        keys.append(ApiKey(digest, scopes))
    return keys


class KeyRing:
    """The configured keys. ``authenticate`` compares the presented key's hash with every
    configured hash, in constant time and without stopping at a match, so that the time taken
    tells nothing about which key, or how much of one, matched."""

    # Keys that matched, by what the client presented: a client sends the same key with every
    # request, and the ring never changes, so a match holds. Only matches are kept (a stranger's
    # guesses cannot fill it), and a hit tells a client nothing it did not send.
    MATCHES_KEPT = 256

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = tuple(keys)
        self._matched: dict[str, ApiKey] = {}

    def __bool__(self) -> bool:
        return bool(self.keys)

    def authenticate(self, presented: str) -> ApiKey | None:
        known = self._matched.get(presented)
        if known is not None:
            return known
        digest = hash_key(presented).encode()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256.encode()):
                found = key
        if found is not None:
            if len(self._matched) >= self.MATCHES_KEPT:
                self._matched.clear()
            self._matched[presented] = found
        return found
