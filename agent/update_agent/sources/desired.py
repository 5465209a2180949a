"""The validated description of the image a node should run.

Metadata is untrusted input: every value is checked here, and an error names
the key and the offending value. Nothing downstream re-validates.
"""

import dataclasses
import logging
import urllib.parse

from update_agent import names
# validate_image_id and MAX_IMAGE_ID are also read from here (the element, the tests)
from update_agent.decide.image_id import MAX_IMAGE_ID, show_value, validate_image_id  # noqa: F401
from update_agent.decide.rollout import policy as rollout_policy
from update_agent.errors import BadInput
from update_agent.images import signature
from update_agent.images.fetch import Digest

LOG = logging.getLogger(__name__)

REBOOT_POLICIES = ("auto", "never", "manual")
URL_SCHEMES = ("http", "https", "file")
KNOWN_KEYS = ("image_url", "image_digest", "reboot", "image_signature", "rollout", "group", "repo")
REPO_SCHEMES = ("http", "https")
MAX_URL = 4096


@dataclasses.dataclass(frozen=True)
class Desired:
    image_id: str
    image_url: str
    image_digest: str  # "" when none was given
    reboot: str = ""  # "" when the metadata does not say: the config's policy applies
    image_signature: str = ""  # base64 ed25519 signature over image_digest, "" if none
    rollout: rollout_policy.Policy = None  # None when the metadata carries no rollout policy
    group: str = ""  # "" when the metadata does not say: the config's group applies
    # an object repository's URL ("" for none): the image comes from there, file by
    # file, and image_digest (and image_signature) are its manifest's
    repo: str = ""

    def to_dict(self):
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["rollout"] = self.rollout.to_dict() if self.rollout is not None else None
        return d


def validate_digest(value, key="update_agent.image_digest"):
    if value is None or value == "":
        return ""
    return str(Digest.parse(value, key="metadata key %r" % key))


def validate_url(value, key="update_agent.image_url"):
    if not isinstance(value, str):
        raise BadInput("metadata key %r must be a string, got %s %s"
                       % (key, type(value).__name__, show_value(value)))
    if len(value) > MAX_URL or any(ord(c) < 33 for c in value):
        raise BadInput("metadata key %r has invalid URL %s" % (key, show_value(value)))
    try:
        scheme = urllib.parse.urlsplit(value).scheme.lower()
    except ValueError as e:
        raise BadInput("metadata key %r has invalid URL %s: %s" % (key, show_value(value), e))
    if scheme not in URL_SCHEMES:
        raise BadInput("metadata key %r has unsupported URL scheme in %s (allowed: %s)"
                       % (key, show_value(value), ", ".join(URL_SCHEMES)))
    return value


def validate_repo(value, key="update_agent.repo"):
    """An object repository's URL (http or https), or "" when none is given."""
    if value is None or value == "":
        return ""
    validate_url(value, key)
    if urllib.parse.urlsplit(value).scheme.lower() not in REPO_SCHEMES or \
            not urllib.parse.urlsplit(value).hostname:
        raise BadInput("metadata key %r must be an http:// or https:// URL of an object "
                       "repository, got %s" % (key, show_value(value)))
    return value


def validate_reboot(value, key="update_agent.reboot"):
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or value not in REBOOT_POLICIES:
        raise BadInput("metadata key %r has invalid value %s (expected one of: %s)"
                       % (key, show_value(value), ", ".join(REBOOT_POLICIES)))
    return value


def from_metadata(metadata, url_template=""):
    """Build a Desired from merged metadata (a dict) and the config's URL template."""
    if not isinstance(metadata, dict):
        raise BadInput("metadata must be a JSON object, got %s" % type(metadata).__name__)
    image_id = validate_image_id(metadata.get("image_id"))
    opts = metadata.get("update_agent")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise BadInput("metadata key 'update_agent' must be an object, got %s %s"
                       % (type(opts).__name__, show_value(opts)))
    for key in opts:
        if key not in KNOWN_KEYS:
            # a newer template may carry keys this agent does not know yet
            LOG.warning("ignoring unknown metadata key update_agent.%s", key)
    repo = validate_repo(opts.get("repo"))
    url = opts.get("image_url")
    if repo and not url:
        url, key = "", "update_agent.repo"
    elif url is None or url == "":
        if not url_template:
            raise BadInput("no image URL for image_id %r: set update_agent.image_url in the "
                           "metadata or image_url_template in the config" % image_id)
        try:
            url = url_template.format(image_id=image_id)
        except (KeyError, IndexError, ValueError) as e:
            raise BadInput("config image_url_template = %r cannot be filled in: %s"
                           % (url_template, e))
        key = "image_url_template"
    else:
        key = "update_agent.image_url"
    return Desired(
        image_id=image_id,
        image_url=validate_url(url, key) if url else "",
        repo=repo,
        image_digest=validate_digest(opts.get("image_digest")),
        reboot=validate_reboot(opts.get("reboot")),
        image_signature=validate_signature(opts.get("image_signature")),
        rollout=validate_rollout(opts.get("rollout")),
        group=validate_group(opts.get("group")),
    )


def validate_signature(value, key="update_agent.image_signature"):
    if value is None or value == "":
        return ""
    signature.decode(value, key)
    return value.strip()


def validate_rollout(value, key="update_agent.rollout"):
    """The rollout policy (a JSON object, or its text), or None when not given."""
    if value is None or value == "":
        return None
    return rollout_policy.parse(value, key)


def validate_group(value, key="update_agent.group"):
    """The node's group (its role), the same rule as the config's [coordination] group."""
    if value is None or value == "":
        return ""
    if not names.is_simple_name(value):
        raise BadInput("metadata key %r has invalid value %s (%s)"
                       % (key, show_value(value), names.SIMPLE_NAME_RULE))
    return value


def rollout_of(want, file_text="", path=""):
    """The node's rollout policy: the metadata's, else the config's policy file
    (its text, read by the caller), else None."""
    if want.rollout is not None:
        return want.rollout
    if not file_text.strip():
        return None
    return rollout_policy.parse(file_text, key="", what="rollout policy file %s: key" % path)


def group_of(want, config_group):
    """The node's group: metadata update_agent.group wins over [coordination] group."""
    return want.group or config_group
