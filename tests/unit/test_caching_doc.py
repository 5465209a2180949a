"""docs/caching.md shows the very configurations the cache tests run (tools/caches_local.py),
with a site's values instead of the test's ports and paths, and the origin's headers as
tools/nginx_local.py sends them: what an operator copies is what was measured."""

import os
import re

import caches_local
import nginx_local

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "docs", "caching.md")


def _blocks():
    with open(DOC, encoding="utf-8") as f:
        return re.findall(r"^```[a-z]*\n(.*?)^```$", f.read(), re.S | re.M)


def test_the_squid_configuration_shown_is_the_one_tested():
    assert caches_local.render(caches_local.SQUID_CONF, caches_local.DOC_SQUID) in _blocks()


def test_the_nginx_site_shown_is_the_one_tested():
    assert caches_local.render(caches_local.NGINX_SITE, caches_local.DOC_NGINX) in _blocks()


def test_the_origins_headers_shown_are_the_test_origins():
    origin = nginx_local.CONF.format(work="W", port=1, root="R", log_format="L", limit="", sndbuf="")
    shown = [b for b in _blocks() if "add_header Cache-Control" in b]
    assert shown and all(b in origin for b in shown)


def test_leaving_a_directive_out_drops_its_lines_only():
    text = caches_local.render(caches_local.SQUID_CONF, caches_local.DOC_SQUID,
                               without=("range_offset_limit",))
    assert "range_offset_limit" not in text
    assert text.count("\n") == caches_local.render(caches_local.SQUID_CONF,
                                                   caches_local.DOC_SQUID).count("\n") - 1
