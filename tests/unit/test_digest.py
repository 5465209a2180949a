"""Digest.parse accepts exactly sha256/sha512 with the right number of hex digits."""

import dataclasses
import hashlib

import pytest

from update_agent.errors import BadInput
from update_agent.images.fetch import Digest

SHA256 = hashlib.sha256(b"image").hexdigest()
SHA512 = hashlib.sha512(b"image").hexdigest()


def test_parse_sha256():
    d = Digest.parse("sha256:" + SHA256)
    assert (d.algorithm, d.hexdigest) == ("sha256", SHA256)
    assert str(d) == "sha256:" + SHA256
    h = d.new_hasher()
    h.update(b"image")
    assert h.hexdigest() == d.hexdigest


def test_parse_sha512():
    d = Digest.parse("sha512:" + SHA512)
    assert (d.algorithm, d.hexdigest) == ("sha512", SHA512)
    assert d.new_hasher().name == "sha512"


def test_uppercase_hex_is_normalised():
    d = Digest.parse("sha256:" + SHA256.upper())
    assert d.hexdigest == SHA256
    assert d == Digest.parse("sha256:" + SHA256)


def test_frozen():
    d = Digest.parse("sha256:" + SHA256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.hexdigest = "0" * 64


@pytest.mark.parametrize("text", [
    "md5:" + hashlib.md5(b"image").hexdigest(),
    "sha1:" + hashlib.sha1(b"image").hexdigest(),
    "sha256:" + SHA256[:-1],           # too short
    "sha256:" + SHA256 + "0",          # too long
    "sha256:" + SHA512,                # sha512 length under sha256
    "sha512:" + SHA256,
    "sha256:" + "g" * 64,              # not hex
    "sha256:" + SHA256[:-1] + " ",
    " sha256:" + SHA256,
    "sha256" + SHA256,                 # no colon
    SHA256,
    "sha256:",
    "",
])
def test_bad_strings_rejected(text):
    with pytest.raises(BadInput) as err:
        Digest.parse(text, key="metadata.image_digest")
    msg = str(err.value)
    assert msg.startswith("metadata.image_digest ")
    assert repr(text)[:150] in msg
    assert "\n" not in msg


@pytest.mark.parametrize("value", [None, 123, b"sha256:" + SHA256.encode(), ["sha256", SHA256]])
def test_non_strings_rejected(value):
    with pytest.raises(BadInput) as err:
        Digest.parse(value)
    assert str(err.value).startswith("image_digest ")
    assert repr(value)[:100] in str(err.value)
