"""Checkpoints as C2SP signed notes: the format, the key hash, and every way a note can
be forged or mangled."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import note
from services.audit.note import BadNote, Checkpoint

ROOT = bytes(range(32))
ED = b"\x01"
NOT_ED = b"\x02"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
NAME = "carecoord.example/audit"


def verifier() -> note.Verifier:
    return note.parse_vkey(note.vkey(NAME, KEY.public_key()))


def test_a_signed_checkpoint_reads_back_and_has_the_c2sp_layout() -> None:
    cp = Checkpoint(f"{NAME}/3", 12, ROOT, ("carecoord-signed-at 2026-01-01T00:00:00.000000Z",))
    text = note.sign(cp, NAME, KEY)
    body, signatures = text.split("\n\n")
    assert body.split("\n") == [
        f"{NAME}/3",
        "12",
        base64.b64encode(ROOT).decode(),
        cp.extensions[0],
    ]
    dash, name, stamp = signatures.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", NAME)
    assert base64.b64decode(stamp)[:4] == note.key_hash(NAME, KEY.public_key())
    assert note.open_note(text, verifier()) == cp


def test_the_key_hash_and_vkey_follow_the_sumdb_note_format() -> None:
    # The vkey of Go's golang.org/x/mod/sumdb/note for this name and key: name, the first
    # four bytes of SHA-256(name "\n" 0x01 key) in hex, and base64(0x01 key).
    import hashlib

    raw = KEY.public_key().public_bytes_raw()
    expected = hashlib.sha256(NAME.encode() + b"\n\x01" + raw).digest()[:4].hex()
    assert (
        note.vkey(NAME, KEY.public_key())
        == f"{NAME}+{expected}+{base64.b64encode(ED + raw).decode()}"
    )


def test_a_vkey_whose_base64_key_holds_a_plus_reads_back() -> None:
    # Base64 uses '+': only the first two '+' separate name, hash and key.
    seed = 0
    while True:
        key = Ed25519PrivateKey.from_private_bytes(seed.to_bytes(32, "big"))
        text = note.vkey(NAME, key.public_key())
        if "+" in text.split("+", 2)[2]:
            break
        seed += 1
    parsed = note.parse_vkey(text)
    assert (parsed.name, parsed.hash) == (NAME, note.key_hash(NAME, key.public_key()))


def test_signatures_by_other_keys_are_ignored_and_one_of_ours_is_needed() -> None:
    other = Ed25519PrivateKey.generate()
    cp = Checkpoint(NAME, 1, ROOT)
    cosigned = note.sign(cp, NAME, KEY) + note.sign(cp, "witness.example", other).split("\n\n")[1]
    assert note.open_note(cosigned, verifier()) == cp
    with pytest.raises(BadNote, match="no signature by"):
        note.open_note(note.sign(cp, "witness.example", other), verifier())
    # A forger's key under our name: its key hash differs, so it is not ours.
    with pytest.raises(BadNote, match="no signature by"):
        note.open_note(note.sign(cp, NAME, other), verifier())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("\n12\n", "\n13\n"),  # a larger tree claimed
        lambda t: t.replace(f"{NAME}/3\n", f"{NAME}/4\n"),  # another chain's origin
        lambda t: t.replace("\n\n", "\nextra\n\n"),  # a line added to the body
        lambda t: t[:-1],  # no final newline
        lambda t: t.replace("\n\n", "\n"),  # no blank line
        lambda t: t.replace("\u2014 ", "- "),  # not an em dash
        lambda t: t[: t.rindex(" ") + 1] + "!!!!\n",  # not base64
        lambda t: t[: t.rindex(" ") + 1] + base64.b64encode(b"\x00" * 3).decode() + "\n",
        lambda t: t.replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[:31]).decode()),
        lambda t: "x" * (note.MAX_NOTE + 1),
    ],
)
def test_a_mangled_or_altered_note_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    text = note.sign(Checkpoint(f"{NAME}/3", 12, ROOT), NAME, KEY)
    with pytest.raises(BadNote):
        note.open_note(mangle(text), verifier())


def test_a_flipped_signature_bit_is_refused() -> None:
    text = note.sign(Checkpoint(NAME, 5, ROOT), NAME, KEY)
    body, line = text.split("\n\n")
    dash, name, stamp = line.rstrip("\n").split(" ")
    blob = bytearray(base64.b64decode(stamp))
    blob[-1] ^= 1
    forged = f"{body}\n\n{dash} {name} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(BadNote, match="does not verify"):
        note.open_note(forged, verifier())


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "a+b",
        f"{NAME}+00000000+{base64.b64encode(ED + bytes(32)).decode()}",  # wrong hash
        f"{NAME}+{'0' * 8}+{base64.b64encode(NOT_ED + bytes(32)).decode()}",  # not Ed25519
        "bad name+00+AA==",
    ],
)
def test_a_bad_verifier_key_is_refused(text: str) -> None:
    with pytest.raises(BadNote):
        note.parse_vkey(text)


def test_checkpoint_bodies_are_parsed_strictly() -> None:
    good = Checkpoint(NAME, 0, ROOT).body()
    assert note.parse_checkpoint(good).size == 0
    for body in (
        good.replace("\n0\n", "\n00\n"),
        good.replace("\n0\n", "\n-1\n"),
        good + "\n",
        "a\nb\n",
    ):
        with pytest.raises(BadNote):
            note.parse_checkpoint(body)
    with pytest.raises(BadNote):
        note.sign(Checkpoint("has space", 1, ROOT), NAME, KEY)
    with pytest.raises(BadNote):
        note.sign(Checkpoint(NAME, 1, ROOT, ("two\nlines",)), NAME, KEY)


def test_the_log_name_setting_is_a_key_name_and_defaults_to_the_stores() -> None:
    from pydantic import ValidationError

    from services.audit import store
    from services.settings import Settings

    assert Settings(_env_file=None).audit_log_name == store.LOG_NAME  # type: ignore[call-arg]
    note.vkey(store.LOG_NAME, KEY.public_key())
    for bad in ("has space", "a+b", "", "x" * 256):
        with pytest.raises(ValidationError):
            Settings(audit_log_name=bad, _env_file=None)  # type: ignore[call-arg]
