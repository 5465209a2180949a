"""Signed images: ed25519 over the image digest, keys on the node."""

import base64
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import world
from world import agent, write_metadata

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_mounts")]
SIGNER, STRANGER = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def w(tmp_path_factory, need_mounts):
    return world.World(str(tmp_path_factory.mktemp("sig")))


@pytest.fixture
def node(w, tmp_path):
    pem = SIGNER.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    n = w.node(str(tmp_path), files={"etc/update-agent/keys/release.pub": pem})
    yield n
    n.stop()


def signed(w, tmp_path, key=SIGNER, signature=None):
    digest = world.sha256(w.image_b)
    sig = signature if signature is not None else base64.b64encode(key.sign(digest.encode())).decode()
    return write_metadata(str(tmp_path / "m.json"), "img-B", world.offered(tmp_path, w.image_b), digest,
                          image_signature=sig)


def require(tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text("[agent]\nrequire_signature = true\n")
    return str(conf)


def test_a_signed_image_is_applied(w, node, tmp_path):
    r = agent(node.root, "apply", metadata=signed(w, tmp_path), config=require(tmp_path))
    assert r.returncode == 0, r.stderr
    world.assert_matches_image(node.root, w.tree_b)


@pytest.mark.parametrize("case, code, words", [
    ("stranger", 1, ["matches none of the 1 keys"]),
    ("not-base64", 2, ["image_signature", "not base64"]),
    ("short", 2, ["not an ed25519 signature"]),
    ("missing", 2, ["require_signature"]),
])
def test_bad_signatures_change_nothing(w, node, tmp_path, case, code, words):
    meta = {"stranger": lambda: signed(w, tmp_path, key=STRANGER),
            "not-base64": lambda: signed(w, tmp_path, signature="not base64 at all!"),
            "short": lambda: signed(w, tmp_path, signature=base64.b64encode(b"x" * 10).decode()),
            "missing": lambda: w.metadata_for_b(str(tmp_path))}[case]()
    before = world.snapshot(node.root)
    r = agent(node.root, "apply", metadata=meta, config=require(tmp_path))
    assert r.returncode == code, r.stderr
    assert all(word in r.stderr for word in words), r.stderr
    assert world.snapshot(node.root) == before
    images = os.path.join(node.root, "var/lib/update-agent/images")
    assert not os.path.isdir(images) or not os.listdir(images), "nothing downloaded"
