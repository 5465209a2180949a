"""Signed images: an ed25519 signature over the image's digest string.

The metadata's update_agent.image_signature (base64) signs the exact text of
update_agent.image_digest ("sha256:<hex>"). The digest is checked against the
file, the signature against the digest, with the public keys in
/etc/update-agent/keys/ on the node (*.pub: PEM, or base64 of the 32 raw bytes).
"""

import base64
import binascii
import logging
import os

from update_agent.errors import AgentError, BadInput

LOG = logging.getLogger(__name__)


def decode(text, key="update_agent.image_signature"):
    if not isinstance(text, str):
        raise BadInput("metadata key %r must be a base64 string, got %s" % (key, type(text).__name__))
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("metadata key %r is not base64: %r" % (key, text[:80]))
    if len(raw) != 64:
        raise BadInput("metadata key %r is not an ed25519 signature (%d bytes, not 64)" % (key, len(raw)))
    return raw


def load_keys(directory):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    keys = []
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".pub"))
    except FileNotFoundError:
        return keys
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            data = f.read()
        try:
            if b"BEGIN PUBLIC KEY" in data:
                key = load_pem_public_key(data)
            else:
                key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
        except (ValueError, binascii.Error, TypeError) as e:
            raise AgentError("public key %s cannot be read: %s" % (path, e))
        if not isinstance(key, Ed25519PublicKey):
            raise AgentError("public key %s is not an ed25519 key" % path)
        keys.append((name, key))
    return keys


def verify(digest, signature, keys_dir, image_id):
    """Raise unless one of the node's keys signed this digest."""
    from cryptography.exceptions import InvalidSignature
    keys = load_keys(keys_dir)
    if not keys:
        raise AgentError("image %s is signed but there is no public key in %s" % (image_id, keys_dir))
    for name, key in keys:
        try:
            key.verify(signature, digest.encode())
            LOG.info("image %s: signature by key %s", image_id, name)
            return name
        except InvalidSignature:
            continue
    raise AgentError("image %s: signature over %s matches none of the %d keys in %s"
                     % (image_id, digest, len(keys), keys_dir))


def load_private_key(path):
    """An ed25519 private key file: PEM (PKCS#8, as `openssl genpkey -algorithm ed25519`
    writes), or base64 of the 32 raw bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadInput("--key %s cannot be read: %s" % (path, e.strerror))
    try:
        if b"BEGIN" in data:
            key = load_pem_private_key(data, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, binascii.Error, TypeError) as e:
        raise BadInput("--key %s is not an ed25519 private key: %s" % (path, str(e).splitlines()[0]))
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput("--key %s is not an ed25519 private key" % path)
    return key


def sign(digest, key):
    """The base64 signature of a digest's exact text, as verify() checks it."""
    return base64.b64encode(key.sign(digest.encode())).decode()
