"""The encryption codec and its keyring: round trips, rotation by key id, and the errors."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from agentparallels.codec import data_converter, payload_codec
from agentparallels.core.errors import UsageError
from agentparallels.encryption import (
    ENCODING,
    KEY_ID_FIELD,
    CodecKeyError,
    EncryptionCodec,
    Keyring,
    fingerprint,
)

OLD = bytes(range(32))
NEW = bytes(range(100, 132))
SECRET = Payload(metadata={"encoding": b"json/plain"}, data=b'"the zebra password is 7731"')


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def ring(*entries: str, current: str | None = None) -> Keyring:
    return Keyring.parse(entries, source="test", current=current)


async def test_payload_is_encrypted_under_the_current_key_id_and_decrypts() -> None:
    """The encoded payload names its key id, holds no plaintext (metadata included) and
    decrypts to the same bytes; two encodings of one payload differ (fresh nonces)."""
    codec = EncryptionCodec(ring(f"k2024:{b64(OLD)}"))
    [sealed] = await codec.encode([SECRET])
    [again] = await codec.encode([SECRET])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_FIELD] == b"k2024"
    assert b"zebra" not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()
    assert sealed.data != again.data
    [opened] = await codec.decode([sealed])
    assert opened == SECRET


async def test_old_key_id_still_decodes_after_rotation() -> None:
    """Payloads sealed under the old key decode once the new key is current, as long as the
    old key stays in the ring; new payloads use the new id."""
    before = EncryptionCodec(ring(f"old:{b64(OLD)}"))
    [sealed] = await before.encode([SECRET])
    after = EncryptionCodec(ring(f"new:{b64(NEW)}", f"old:{b64(OLD)}"))
    assert await after.decode([sealed]) == [SECRET]
    [fresh] = await after.encode([SECRET])
    assert fresh.metadata[KEY_ID_FIELD] == b"new"


async def test_unknown_key_id_is_named_in_the_error() -> None:
    """Dropping a key too early makes its payloads fail with an error naming the id."""
    [sealed] = await EncryptionCodec(ring(f"old:{b64(OLD)}")).encode([SECRET])
    with pytest.raises(CodecKeyError, match="encrypted with key id 'old', which this process does"):
        await EncryptionCodec(ring(f"new:{b64(NEW)}")).decode([sealed])
    with pytest.raises(CodecKeyError, match=r"key id 'old'.*\(its keys: none"):
        await EncryptionCodec(Keyring()).decode([sealed])


async def test_a_different_key_under_the_same_id_is_reported_not_garbled() -> None:
    """The same id bound to another key fails authentication, and says so."""
    [sealed] = await EncryptionCodec(ring(f"k:{b64(OLD)}")).encode([SECRET])
    with pytest.raises(CodecKeyError, match="key id 'k' does not decrypt with this process's key"):
        await EncryptionCodec(ring(f"k:{b64(NEW)}")).decode([sealed])


async def test_no_key_leaves_payloads_in_clear() -> None:
    """Without a key, encoding changes nothing (encryption is optional)."""
    assert await EncryptionCodec(Keyring()).encode([SECRET]) == [SECRET]


async def test_large_payloads_reach_the_blob_store_only_as_ciphertext(tmp_path: Path) -> None:
    """Encryption runs before external storage: the stored file holds ciphertext, the
    reference that stays in history a hash."""
    codec = payload_codec(tmp_path, threshold=64, keyring=ring(b64(OLD)))
    big = Payload(metadata={"encoding": b"json/plain"}, data=b'"zebra ' + b"z" * 500 + b'"')
    [ref] = await codec.encode([big])
    assert b"ExternalStorageReference" in ref.metadata["messageType"]
    assert b"zebra" not in ref.SerializeToString()
    [stored] = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert b"zebra" not in stored and ENCODING in stored
    assert await codec.decode([ref]) == [big]


def test_keys_parse_from_base64_hex_and_fingerprints() -> None:
    """Base64 (standard, URL-safe) and hex keys are accepted; a bare key is named by its
    fingerprint; the first entry is current unless another is chosen."""
    urlsafe = base64.urlsafe_b64encode(b"\xfb" * 32).decode()
    keyring = ring(OLD.hex(), f"b:{urlsafe}", current="b")
    assert keyring.keys == {fingerprint(OLD): OLD, "b": b"\xfb" * 32}
    assert keyring.current == "b"
    assert ring(f"a:{b64(OLD)}", f"b:{b64(NEW)}").current == "a"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTPARALLELS_CODEC_KEY": "c2hvcnQ="}, "the key is not 32 random bytes"),
        ({"AGENTPARALLELS_CODEC_KEYS": f"a:{b64(OLD)},a:{b64(NEW)}"}, "'a' appears twice"),
        ({"AGENTPARALLELS_CODEC_KEYS": f"bad id:{b64(OLD)}"}, "key id 'bad id' must be"),
        (
            {"AGENTPARALLELS_CODEC_KEYS": f"a:{b64(OLD)}", "AGENTPARALLELS_CODEC_KEY_ID": "b"},
            "AGENTPARALLELS_CODEC_KEY_ID=b is not in AGENTPARALLELS_CODEC_KEYS",
        ),
        (
            {"AGENTPARALLELS_CODEC_KEY": b64(OLD), "AGENTPARALLELS_CODEC_KEYS": f"a:{b64(NEW)}"},
            "set only one of AGENTPARALLELS_CODEC_KEY, AGENTPARALLELS_CODEC_KEYS",
        ),
        ({"AGENTPARALLELS_CODEC_KEY_FILE": "/nonexistent/keys"}, "cannot read the key file"),
    ],
)
def test_bad_key_configuration_is_a_usage_error(env: dict[str, str], message: str) -> None:
    """Each configuration mistake is one line naming the variable, never the key."""
    with pytest.raises(UsageError, match=message) as error:
        Keyring.from_env(env)
    assert b64(OLD) not in str(error.value) and b64(NEW) not in str(error.value)


def test_key_file_with_comments_and_rotation_order(tmp_path: Path) -> None:
    """A key file lists ID:KEY lines (comments and blanks ignored); the first is current."""
    keys = tmp_path / "keyring"
    keys.write_text(f"# current first\n2025-06:{b64(NEW)}\n\n2024-01:{b64(OLD)}  # old\n")
    keyring = Keyring.from_env({"AGENTPARALLELS_CODEC_KEY_FILE": str(keys)})
    assert keyring.current == "2025-06" and set(keyring.keys) == {"2025-06", "2024-01"}
    assert b64(NEW) not in repr(keyring)


async def test_data_converter_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data_converter() (used by every client, worker and replayer) encrypts when a key is in
    the environment and encodes failure messages so they are encrypted too."""
    monkeypatch.setenv("AGENTPARALLELS_CODEC_KEY", b64(OLD))
    converter = data_converter(tmp_path)
    [payload] = await converter.encode(["the zebra password"])
    assert payload.metadata[KEY_ID_FIELD] == fingerprint(OLD).encode()
    assert b"zebra" not in await failure_bytes(converter, "the zebra failed")
    monkeypatch.delenv("AGENTPARALLELS_CODEC_KEY")
    assert b"zebra" in await failure_bytes(data_converter(tmp_path), "the zebra failed")


async def failure_bytes(converter: DataConverter, message: str) -> bytes:
    """An error as the converter would record it in history."""
    failure = Failure()
    await converter.encode_failure(ApplicationError(message), failure)
    return failure.SerializeToString()
