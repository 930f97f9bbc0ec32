"""Checkpoints as C2SP signed notes (c2sp.org/signed-note, c2sp.org/tlog-checkpoint),
signed with Ed25519: pure functions over text and keys.

A checkpoint's body is three lines, then extension lines:

    <origin>
    <tree size, decimal>
    <root hash, base64>
    [extension lines]

and the note is the body, an empty line, and one line per signature:
"— <key name> <base64(4-byte key hash || 64-byte signature)>". The key hash is the first
four bytes of SHA-256(key name || "\\n" || 0x01 || public key); a verifier key is written
"<name>+<key hash, hex>+<base64(0x01 || public key)>" (the vkey format of Go's
golang.org/x/mod/sumdb/note, which witnesses and tlog tools read).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
# Notes are small; anything larger is not one of ours (and is not parsed).
MAX_NOTE = 64 * 1024
_DASH = "\u2014"
# Key names and origins: printable, no spaces and (for names) no '+'.
_NAME = re.compile(r"[!-*,-~]{1,255}")
_ORIGIN = re.compile(r"[!-~]{1,255}")
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


class BadNote(ValueError):
    """A note or checkpoint that is malformed or not signed by the expected key."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(name: str, key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + _raw(key)).digest()[:4]


def vkey(name: str, key: Ed25519PublicKey) -> str:
    """The verifier key string for `key` under `name`."""
    _check_name(name)
    encoded = base64.b64encode(bytes([ED25519]) + _raw(key)).decode()
    return f"{name}+{key_hash(name, key).hex()}+{encoded}"


@dataclass(frozen=True)
class Verifier:
    name: str
    key: Ed25519PublicKey

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.key)


def parse_vkey(text: str) -> Verifier:
    """A verifier from its vkey string; BadNote when it is not an Ed25519 vkey."""
    parts = text.strip().split("+", 2)  # the base64 key may hold a "+"
    if len(parts) != 3:
        raise BadNote("a verifier key is '<name>+<hash>+<key>'")
    name, hash_hex, encoded = parts
    _check_name(name)
    try:
        raw = base64.b64decode(encoded, validate=True)
        expected = bytes.fromhex(hash_hex)
    except (binascii.Error, ValueError):
        raise BadNote("the verifier key's hash or key is not valid hex/base64") from None
    if len(raw) != 33 or raw[0] != ED25519:
        raise BadNote("the verifier key is not an Ed25519 key")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_hash(name, key) != expected:
        raise BadNote("the verifier key's hash does not match its name and key")
    return Verifier(name, key)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise BadNote("a key name is 1-255 printable characters without spaces or '+'")


def sign(checkpoint: Checkpoint, name: str, key: Ed25519PrivateKey) -> str:
    """The signed note of `checkpoint`, signed by `key` under `name`."""
    _check_checkpoint(checkpoint)
    _check_name(name)
    body = checkpoint.body()
    signature = key.sign(body.encode())
    stamp = base64.b64encode(key_hash(name, key.public_key()) + signature).decode()
    return f"{body}\n{_DASH} {name} {stamp}\n"


def open_note(text: str, verifier: Verifier) -> Checkpoint:
    """The checkpoint a note carries, once its signature by `verifier` is checked.
    Signatures by other keys are ignored (a witness may have cosigned); one by this
    key's name and hash that does not verify is refused."""
    if len(text) > MAX_NOTE:
        raise BadNote("the note is too large")
    body, sep, signatures = text.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise BadNote(
            "a note is a body, an empty line and signature lines, each ending in a newline"
        )
    body += "\n"
    found = False
    for line in signatures[:-1].split("\n"):
        dash, _, rest = line.partition(" ")
        name, _, stamp = rest.partition(" ")
        if dash != _DASH or not name or not stamp or " " in stamp:
            raise BadNote("a signature line is '\u2014 <name> <base64 signature>'")
        try:
            blob = base64.b64decode(stamp, validate=True)
        except binascii.Error:
            raise BadNote("a signature is not base64") from None
        if len(blob) < 5:
            raise BadNote("a signature is too short")
        if name != verifier.name or blob[:4] != verifier.hash:
            continue
        if len(blob) != 4 + 64:
            raise BadNote("an Ed25519 signature is 64 bytes")
        try:
            verifier.key.verify(blob[4:], body.encode())
        except InvalidSignature:
            raise BadNote(f"the signature by {verifier.name} does not verify") from None
        found = True
    if not found:
        raise BadNote(f"the note carries no signature by {verifier.name}")
    return parse_checkpoint(body)


def parse_checkpoint(body: str) -> Checkpoint:
    """The checkpoint a note body states (unverified: use open_note for a signed one)."""
    if not body.endswith("\n"):
        raise BadNote("a checkpoint body ends with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise BadNote("a checkpoint has an origin, a size and a root hash")
    origin, size, encoded, *extensions = lines
    if not _ORIGIN.fullmatch(origin):
        raise BadNote("a checkpoint's origin is printable text without spaces")
    if not _SIZE.fullmatch(size):
        raise BadNote("a checkpoint's size is a decimal number without leading zeros")
    try:
        root = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise BadNote("a checkpoint's root hash is not base64") from None
    if len(root) != 32:
        raise BadNote("a checkpoint's root hash is not 32 bytes")
    if any(not line for line in extensions):
        raise BadNote("a checkpoint's extension lines are not empty")
    checkpoint = Checkpoint(origin, int(size), root, tuple(extensions))
    return checkpoint


def _check_checkpoint(checkpoint: Checkpoint) -> None:
    if not _ORIGIN.fullmatch(checkpoint.origin):
        raise BadNote("a checkpoint's origin is printable text without spaces")
    if checkpoint.size < 0 or len(checkpoint.root) != 32:
        raise BadNote("a checkpoint has a size of 0 or more and a 32-byte root")
    if any(not line or "\n" in line for line in checkpoint.extensions):
        raise BadNote("a checkpoint's extension lines are single non-empty lines")
