"""Encrypted payloads: AES-256-GCM with keys named by id, so keys can be rotated.

Turned on by configuring a key; off (payloads in clear) when none is. Each payload is
serialized whole (its metadata too), encrypted with the *current* key under a fresh 96-bit
nonce, and replaced by ``{"encoding": "binary/encrypted", "encryption-key-id": ID}`` with
``nonce + ciphertext`` as data; the key id is also bound to the ciphertext as associated data.
Decoding looks the id up in the keyring, so payloads written under an older key keep decoding as
long as that key stays in the ring. Keys never enter history: only their ids do.

Where the keys come from (exactly one source; all hold the same kind of entries)::

    AGENTPARALLELS_CODEC_KEY=KEY                       one key
    AGENTPARALLELS_CODEC_KEYS=ID:KEY,ID:KEY            a keyring
    AGENTPARALLELS_CODEC_KEY_FILE=/path/to/keyring     one ID:KEY (or KEY) a line, # comments

A KEY is 32 bytes in base64 (``openssl rand -base64 32``) or hex (``openssl rand -hex 32``). An
entry without ``ID:`` is named by the key's fingerprint (the first 8 hex digits of its SHA-256).
The first entry is the current key, used to encrypt; ``AGENTPARALLELS_CODEC_KEY_ID`` picks
another. Every client, worker and codec server of a deployment must hold the same keyring.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from agentparallels.core.errors import AgentParallelsError, UsageError

ENCODING = b"binary/encrypted"
KEY_ID_FIELD = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32

KEY_VAR = "AGENTPARALLELS_CODEC_KEY"
KEYS_VAR = "AGENTPARALLELS_CODEC_KEYS"
KEY_FILE_VAR = "AGENTPARALLELS_CODEC_KEY_FILE"
KEY_ID_VAR = "AGENTPARALLELS_CODEC_KEY_ID"
SOURCES = (KEY_VAR, KEYS_VAR, KEY_FILE_VAR)

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_HOW = "32 random bytes in base64 or hex (generate one with `openssl rand -base64 32`)"


class CodecKeyError(AgentParallelsError):
    """An encrypted payload cannot be decrypted here: its key is unknown or differs."""


def fingerprint(key: bytes) -> str:
    """The id an entry without one gets: 8 hex digits of the key's SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


def parse_key(text: str, where: str) -> bytes:
    """32 bytes from base64 (standard or URL-safe) or hex; the error never shows the text."""
    text = text.strip()
    key = b""
    if _HEX.fullmatch(text):
        key = bytes.fromhex(text)
    else:
        try:
            altchars = b"-_" if re.search(r"[-_]", text) else None
            key = base64.b64decode(text, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            pass
    if len(key) != KEY_BYTES:
        raise UsageError(f"{where}: the key is not {_HOW}")
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class Keyring:
    """Keys by id, and the id of the one that encrypts (None: payloads stay in clear)."""

    keys: Mapping[str, bytes] = dataclasses.field(default_factory=dict, repr=False)
    """Key id to 32-byte AES key; never shown in repr or messages."""
    current: str | None = None
    """The id new payloads are encrypted with."""
    source: str = "no key configured"
    """Where the keys came from, for error messages."""

    @property
    def encrypts(self) -> bool:
        return self.current is not None

    @classmethod
    def parse(cls, entries: Sequence[str], *, source: str, current: str | None = None) -> Keyring:
        """A keyring from ``ID:KEY`` or ``KEY`` entries; the first is current unless
        ``current`` names another."""
        keys: dict[str, bytes] = {}
        for n, entry in enumerate(entries, 1):
            key_id, sep, text = entry.strip().rpartition(":")
            where = f"{source}, entry {n}" + (f" (key id {key_id!r})" if sep else "")
            key = parse_key(text, where)
            key_id = key_id.strip() if sep else fingerprint(key)
            if not _ID.fullmatch(key_id):
                raise UsageError(
                    f"{source}, entry {n}: key id {key_id!r} must be 1-64 letters, digits, "
                    "'.', '_' or '-'"
                )
            if key_id in keys:
                raise UsageError(f"{source}: key id {key_id!r} appears twice; ids must be unique")
            keys[key_id] = key
        if not keys:
            raise UsageError(f"{source} holds no key: add one ({_HOW})")
        chosen = current or next(iter(keys))
        if chosen not in keys:
            raise UsageError(
                f"{KEY_ID_VAR}={chosen} is not in {source} (it has {', '.join(keys)}): add that "
                "key, or name one of these"
            )
        return cls(keys=keys, current=chosen, source=source)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        """The keyring configured in the environment (see the module docstring)."""
        env = os.environ if environ is None else environ
        given = [name for name in SOURCES if env.get(name)]
        current = env.get(KEY_ID_VAR) or None
        if len(given) > 1:
            raise UsageError(f"set only one of {', '.join(given)} (they are alternative sources)")
        if not given:
            if current:
                raise UsageError(
                    f"{KEY_ID_VAR} is set but no key is: set one of {', '.join(SOURCES)}"
                )
            return cls()
        name = given[0]
        value = env[name]
        if name == KEY_VAR:
            entries = [value]
        elif name == KEYS_VAR:
            entries = [e for e in value.split(",") if e.strip()]
        else:
            try:
                text = Path(value).read_text()
            except OSError as e:
                raise UsageError(
                    f"cannot read the key file {value} ({name}): {e.strerror}"
                ) from None
            lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
            entries = [line for line in lines if line]
            name = f"the key file {value}"
        return cls.parse(entries, source=name, current=current)


class EncryptionCodec(PayloadCodec):
    """Encrypt every payload with the keyring's current key; decrypt with any key it holds.

    With an empty keyring, encoding leaves payloads alone and decoding an encrypted one fails
    with a message naming its key id (instead of a baffling parse error further on)."""

    def __init__(self, keyring: Keyring) -> None:
        # Imported here, not at the top: modules that define workflows import this one, and the
        # workflow sandbox re-imports their imports, which a native extension does not survive.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = self.keyring.current
        if key_id is None:
            return list(payloads)
        cipher, aad = self._ciphers[key_id], key_id.encode()
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCODING:
                out.append(payload)  # already encrypted (a payload passed through as is)
                continue
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), aad)
            metadata = {"encoding": ENCODING, KEY_ID_FIELD: aad}
            out.append(Payload(metadata=metadata, data=nonce + sealed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._open(p) if p.metadata.get("encoding") == ENCODING else p for p in payloads]

    def _open(self, payload: Payload) -> Payload:
        from cryptography.exceptions import InvalidTag

        key_id = payload.metadata.get(KEY_ID_FIELD, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(self._ciphers) or "none"
            raise CodecKeyError(
                f"a payload is encrypted with key id {key_id!r}, which this process does not "
                f"have (its keys: {known}; from {self.keyring.source}): add that key to the "
                f"keyring ({KEYS_VAR} or {KEY_FILE_VAR}) of every client, worker and codec server"
            )
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise CodecKeyError(
                f"a payload encrypted with key id {key_id!r} does not decrypt with this "
                f"process's key of that id (from {self.keyring.source}): the key differs from "
                "the one that encrypted it, or the payload was altered"
            ) from None
        return Payload.FromString(plain)


__all__ = [
    "CodecKeyError",
    "ENCODING",
    "EncryptionCodec",
    "KEYS_VAR",
    "KEY_BYTES",
    "KEY_FILE_VAR",
    "KEY_ID_FIELD",
    "KEY_ID_VAR",
    "KEY_VAR",
    "Keyring",
    "NONCE_BYTES",
    "SOURCES",
    "fingerprint",
    "parse_key",
]
