"""Message authentication for the pipeline topics (care.audit, care.board-updates).

Only the services hold the pipeline keys, so only they can produce a message the audit
writer appends or the API hub pushes to a subscriber: any other client of the broker is
refused. Each message carries two Kafka headers: the key id and an HMAC-SHA256 over the
topic, the message key and the value (length-prefixed, so no two different messages
share an input, and a message moved to another topic no longer verifies).

Keys come from CARECOORD_PIPELINE_KEYS ('id:base64key,...', the last one signs, all of
them verify, so a key can be rotated in: add the new one last everywhere, then drop the
old one once the topics hold no message signed by it). Pure: no I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KEY_ID_HEADER = "carecoord-mac-key"
MAC_HEADER = "carecoord-mac"
# A key shorter than this is refused: HMAC-SHA256 with 32 random bytes.
MIN_KEY_BYTES = 32
_DOMAIN = b"carecoord-pipeline-mac-v1"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class BadPipelineKeys(ValueError):
    """The configured pipeline keys are unusable; the message never quotes a key."""


class Refused(Exception):
    """A message that does not verify; the reason names why, never the message."""


@dataclass(frozen=True)
class PipelineKeys:
    keys: Mapping[str, bytes]
    current: str
    # Where they came from, for the log: "CARECOORD_PIPELINE_KEYS" or "DEV key file <path>".
    source: str = "CARECOORD_PIPELINE_KEYS"

    def sign(self, topic: str, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        """The headers to send with this message."""
        mac = _mac(self.keys[self.current], topic, key, value)
        return [(KEY_ID_HEADER, self.current.encode()), (MAC_HEADER, mac)]

    def verify(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]] | None,
    ) -> None:
        """Return if the message was signed by one of the keys for this topic; raise
        Refused otherwise."""
        found: dict[str, list[bytes]] = {}
        for name, raw in headers or ():
            found.setdefault(str(name), []).append(bytes(raw))
        ids, macs = found.get(KEY_ID_HEADER, []), found.get(MAC_HEADER, [])
        if not ids and not macs:
            raise Refused("no MAC")
        if len(ids) != 1 or len(macs) != 1:
            raise Refused("malformed MAC headers")
        try:
            key_id = ids[0].decode("ascii")
        except UnicodeDecodeError:
            raise Refused("unknown key id") from None
        secret = self.keys.get(key_id)
        if secret is None:
            raise Refused("unknown key id")
        if not hmac.compare_digest(_mac(secret, topic, key, value), macs[0]):
            raise Refused("wrong MAC")


def _mac(secret: bytes, topic: str, key: bytes | None, value: bytes | None) -> bytes:
    h = hmac.new(secret, _DOMAIN, hashlib.sha256)
    for part in (topic.encode(), key, value):
        if part is None:
            h.update(b"\x00")
        else:
            h.update(b"\x01" + len(part).to_bytes(8, "big") + part)
    return h.digest()


def parse(spec: str, *, source: str = "CARECOORD_PIPELINE_KEYS") -> PipelineKeys:
    """'id:base64key,id:base64key' (the last one current)."""
    keys: dict[str, bytes] = {}
    current = ""
    for n, item in enumerate((i.strip() for i in spec.split(",")), start=1):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        key_id = key_id.strip()
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise BadPipelineKeys(
                f"{source}: entry {n} is not 'id:base64key' (id: letters, digits, . _ -)"
            )
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadPipelineKeys(f"{source}: key {key_id!r} is not base64") from None
        if len(secret) < MIN_KEY_BYTES:
            raise BadPipelineKeys(f"{source}: key {key_id!r} is under {MIN_KEY_BYTES} bytes")
        if key_id in keys:
            raise BadPipelineKeys(f"{source}: key id {key_id!r} is listed twice")
        keys[key_id] = secret
        current = key_id
    if not keys:
        raise BadPipelineKeys(f"{source}: no keys")
    return PipelineKeys(keys=keys, current=current, source=source)


def new_key_spec(key_id: str = "dev") -> str:
    """One freshly generated key, as a spec line."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(MIN_KEY_BYTES)).decode()}"
