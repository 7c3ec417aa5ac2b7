"""API keys: who is calling. Keys are stored hashed and checked without timing leaks.

Where it sits: the first step of every data-plane call when the config has an ``auth``
section (:mod:`gateway.pipeline.admission` asks :meth:`KeyRing.tenant` for the tenant behind the
credential, then checks what that tenant may call). Keys come from a document that maps each
tenant to the SHA-256 hashes of its keys, read from ``--api-keys-file`` (e.g. a Secret
mounted by an external secrets operator) or from ``$SERVEGATE_API_KEYS``; it is re-read on
every config reload. Plain keys are never stored, logged or echoed in errors::

    acme:
      - sha256:9c56cc51b374c3ba189210d5b6d4bf57790d351c96c47c02190ecf1e430635ab
    globex:
      - sha256:...

``servegate hash-key`` prints the line for a key. API keys are long random strings, so one
SHA-256 is enough (no password stretching); a presented key is hashed, looked up by its hash
(which reveals nothing usable about stored keys through timing) and confirmed with
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from gateway.errors import Unauthorized

_HASH = re.compile(r"^sha256:([0-9a-f]{64})$")
_DUMMY = bytes(32)


class KeysError(ValueError):
    """The keys document is unreadable or wrong (the message never contains a key)."""


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Key hash -> tenant, for the tenants the config knows."""

    def __init__(self, hashes: Mapping[bytes, str] | None = None) -> None:
        self._by_hash: dict[bytes, str] = dict(hashes or {})
        self._stored = {digest: digest for digest in self._by_hash}  # the stored bytes

    def __len__(self) -> int:
        return len(self._by_hash)

    def tenants(self) -> set[str]:
        return set(self._by_hash.values())

    def tenant(self, key: bytes | None) -> str:
        """The tenant a presented key belongs to; :class:`Unauthorized` if none."""
        if not key:
            raise Unauthorized("missing API key")
        digest = hashlib.sha256(key).digest()
        tenant = self._by_hash.get(digest)
        # Confirm in constant time against the stored digest (or a dummy, so a miss costs
        # the same as a hit).
        stored = self._stored.get(digest, _DUMMY) if tenant is not None else _DUMMY
        matched = hmac.compare_digest(stored, digest)
        if tenant is None or not matched:
            raise Unauthorized("invalid API key")
        return tenant

    @classmethod
    def parse(cls, doc: object, source: str) -> KeyRing:
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise KeysError(f"{source}: expected a mapping of tenant -> list of key hashes")
        hashes: dict[bytes, str] = {}
        for tenant, entries in doc.items():
            if not isinstance(tenant, str) or not isinstance(entries, list):
                raise KeysError(f"{source}: tenant {tenant!r}: expected a list of key hashes")
            for i, entry in enumerate(entries):
                m = _HASH.match(entry) if isinstance(entry, str) else None
                if m is None:  # never echo the entry: it may be a plain key
                    raise KeysError(f"{source}: {tenant}[{i}] is not 'sha256:<64 hex digits>'"
                                    " (store hashes, not keys: servegate hash-key)")
                digest = bytes.fromhex(m.group(1))
                if hashes.get(digest, tenant) != tenant:
                    raise KeysError(f"{source}: {tenant}[{i}] is also a key of "
                                    f"{hashes[digest]!r}")
                hashes[digest] = tenant
        return cls(hashes)


def load_keys(path: Path | None, env: Mapping[str, str] | None = None) -> KeyRing:
    """The key ring from ``path``, else from ``$SERVEGATE_API_KEYS`` (the document itself)."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeysError(f"cannot read the API keys file {path}: {exc}") from exc
        source = str(path)
    else:
        text = (os.environ if env is None else env).get("SERVEGATE_API_KEYS", "")
        source = "$SERVEGATE_API_KEYS"
    try:
        doc = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise KeysError(f"{source}: not valid YAML/JSON (line "
                        f"{getattr(getattr(exc, 'problem_mark', None), 'line', '?')})") from None
    return KeyRing.parse(doc, source)


def credential(value: bytes | None, bearer: bool) -> bytes | None:
    """The key in a header value: after ``Bearer `` for ``authorization``, else as is."""
    if value is None:
        return None
    if bearer:
        scheme, _, rest = value.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        value = rest
    return value.strip() or None
