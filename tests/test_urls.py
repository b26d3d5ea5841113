"""URL sanitizer: only scheme, host, non-default port, registered domain and suffix survive.

Table tests pin the parse of adversarial spellings (what a browser would do);
property tests check the privacy promise itself: no user name, password, token
or session id put anywhere in a URL comes out of `sanitize()` or `reduce()`.
"""

from __future__ import annotations

import pickle
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import urls
from transforms.urls import UrlParts, UrlSanitizer, make_suffix_extractor

STATUSES = {"ok", "opaque", "empty", "invalid_host", "invalid_port", "invalid", "secret_like"}
PROPERTY_SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def extractor():
    return make_suffix_extractor()


@pytest.fixture(scope="module")
def san(extractor) -> UrlSanitizer:
    return UrlSanitizer(extractor)


def ok(scheme, host, port=None, registered=None, suffix=None) -> UrlParts:
    return UrlParts(scheme, host, port, registered, suffix, "ok")


def fail(status, scheme=None) -> UrlParts:
    return UrlParts(scheme, None, None, None, None, status)


EXAMPLE_COM = ("example.com", "com")

CASES = [
    # plain, case, default and non-default ports
    ("https://www.example.com/a/b?c=d#e", ok("https", "www.example.com", None, *EXAMPLE_COM)),
    ("HTTP://WWW.Example.CO.UK:8080/P?Q#F", ok("http", "www.example.co.uk", 8080, "example.co.uk", "co.uk")),
    ("http://example.com:80/", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("http://example.com:0080/", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("https://example.com:443", ok("https", "example.com", None, *EXAMPLE_COM)),
    ("https://example.com:80", ok("https", "example.com", 80, *EXAMPLE_COM)),
    ("http://example.com:443", ok("http", "example.com", 443, *EXAMPLE_COM)),
    ("ws://example.com:80/chat", ok("ws", "example.com", None, *EXAMPLE_COM)),
    ("wss://example.com:443/chat", ok("wss", "example.com", None, *EXAMPLE_COM)),
    ("wss://example.com:8443/chat", ok("wss", "example.com", 8443, *EXAMPLE_COM)),
    ("ftp://example.com:21/pub", ok("ftp", "example.com", None, *EXAMPLE_COM)),
    ("ftp://example.com:22/pub", ok("ftp", "example.com", 22, *EXAMPLE_COM)),
    ("http://example.com:/", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("http://example.com:0/", ok("http", "example.com", 0, *EXAMPLE_COM)),
    ("http://example.com:65535/", ok("http", "example.com", 65535, *EXAMPLE_COM)),
    # user info: never looked at, however it is spelled
    ("https://alice:hunter2@example.com/", ok("https", "example.com", None, *EXAMPLE_COM)),
    ("https://alice@example.com:8443/x", ok("https", "example.com", 8443, *EXAMPLE_COM)),
    ("https://a@b@c@mail.example.com/", ok("https", "mail.example.com", None, *EXAMPLE_COM)),
    ("https://alice:pa@ss@example.com/", ok("https", "example.com", None, *EXAMPLE_COM)),
    ("http://alice%3Asecret%40@example.com/", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("http://alice%40corp:pw@example.com/", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("https://user@host.example:8080@evil.com/", ok("https", "evil.com", None, "evil.com", "com")),
    ("https://[::1]@evil.com/", ok("https", "evil.com", None, "evil.com", "com")),
    ("https://evil.com%2F@good.com/", ok("https", "good.com", None, "good.com", "com")),
    ("https://:@example.com/", ok("https", "example.com", None, *EXAMPLE_COM)),
    ("http:alice:pw@example.com/x", ok("http", "example.com", None, *EXAMPLE_COM)),
    # the host a browser would really contact
    ("https://evil.com\\@good.com/", ok("https", "evil.com", None, "evil.com", "com")),
    ("https://good.com#@evil.com/", ok("https", "good.com", None, "good.com", "com")),
    ("https://good.com?@evil.com/", ok("https", "good.com", None, "good.com", "com")),
    ("https://good.com/@evil.com/", ok("https", "good.com", None, "good.com", "com")),
    # backslashes and slash counts on special schemes
    ("http:\\\\example.com\\path", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("https:/\\/\\example.com", ok("https", "example.com", None, *EXAMPLE_COM)),
    ("https:example.com/x", ok("https", "example.com", None, *EXAMPLE_COM)),
    ("https://///example.com", ok("https", "example.com", None, *EXAMPLE_COM)),
    # whitespace and controls: stripped at the ends, tab/LF/CR removed anywhere
    ("  \x00\x1f https://example.com\x7f", fail("invalid_host", "https")),
    ("  \x00\x1f https://example.com/ \x1f", ok("https", "example.com", None, *EXAMPLE_COM)),
    ("ht\ttp://exa\nmp\rle.com/", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("https://ali\tce:pw@exam\tple.com:80\n80/", ok("https", "example.com", 8080, *EXAMPLE_COM)),
    ("http://exa mple.com/", fail("invalid_host", "http")),
    ("http://exa\x00mple.com/", fail("invalid_host", "http")),
    # IPv4, including the numeric forms browsers accept
    ("http://192.168.0.1/admin", ok("http", "192.168.0.1")),
    ("http://192.168.0.1.:8080/", ok("http", "192.168.0.1", 8080)),
    ("http://0x7f.1/", ok("http", "127.0.0.1")),
    ("http://2130706433/", ok("http", "127.0.0.1")),
    ("http://0x7F000001/", ok("http", "127.0.0.1")),
    ("http://0177.0.0.1/", ok("http", "127.0.0.1")),
    ("http://127.1/", ok("http", "127.0.0.1")),
    ("http://10.1.258/", ok("http", "10.1.1.2")),
    ("http://0x/", ok("http", "0.0.0.0")),
    ("http://１２７.０.０.１/", ok("http", "127.0.0.1")),
    ("http://%31%32%37.0.0.1/", ok("http", "127.0.0.1")),
    ("http://4294967296/", fail("invalid_host", "http")),
    ("http://256.1.1.1/", fail("invalid_host", "http")),
    ("http://1.2.3.256/", fail("invalid_host", "http")),
    ("http://1.2.3.4.5/", fail("invalid_host", "http")),
    ("http://09.1/", fail("invalid_host", "http")),
    ("http://0xg1/", fail("secret_like", "http")),
    ("http://example.123/", fail("invalid_host", "http")),
    # IPv6: compressed, no brackets, zone id dropped
    ("http://[::1]/", ok("http", "::1")),
    ("HTTP://[::1]:80/", ok("http", "::1")),
    ("http://[::1]:8080/x", ok("http", "::1", 8080)),
    ("https://alice:pw@[2001:DB8:0:0:1:0:0:1]:8443/", ok("https", "2001:db8::1:0:0:1", 8443)),
    ("http://[2001:db8::]:/", ok("http", "2001:db8::")),
    ("http://[1:2:3:4:5:6:7:8]/", ok("http", "1:2:3:4:5:6:7:8")),
    ("http://[1:0:0:2:0:0:0:3]/", ok("http", "1:0:0:2::3")),
    ("http://[::ffff:1.2.3.4]/", ok("http", "::ffff:102:304")),
    ("http://[fe80::1%25eth0]:8080/", ok("http", "fe80::1", 8080)),
    ("http://[fe80::1%eth0]/", ok("http", "fe80::1")),
    ("http://[::1/", fail("invalid_host", "http")),
    ("http://[::1]x/", fail("invalid_host", "http")),
    ("http://[zz::1]/", fail("invalid_host", "http")),
    ("http://[1.2.3.4]/", fail("invalid_host", "http")),
    ("http://[]/", fail("invalid_host", "http")),
    ("http://[::1]:abc/", fail("invalid_port", "http")),
    ("http://::1/", fail("invalid_host", "http")),
    # IDN: punycode out, suffixes found in either spelling
    ("http://bücher.example.de/", ok("http", "xn--bcher-kva.example.de", None, "example.de", "de")),
    ("http://BÜCHER.Example.DE/", ok("http", "xn--bcher-kva.example.de", None, "example.de", "de")),
    ("http://xn--bcher-kva.example.de/", ok("http", "xn--bcher-kva.example.de", None, "example.de", "de")),
    ("http://例え.jp/", ok("http", "xn--r8jz45g.jp", None, "xn--r8jz45g.jp", "jp")),
    ("http://xn--r8jz45g.jp/", ok("http", "xn--r8jz45g.jp", None, "xn--r8jz45g.jp", "jp")),
    ("http://%E4%BE%8B%E3%81%88.jp/", ok("http", "xn--r8jz45g.jp", None, "xn--r8jz45g.jp", "jp")),
    ("http://пример.рф/", ok("http", "xn--e1afmkfd.xn--p1ai", None, "xn--e1afmkfd.xn--p1ai", "xn--p1ai")),
    ("http://x.個人.香港/", ok("http", "x.xn--gmqw5a.xn--j6w193g", None, "x.xn--gmqw5a.xn--j6w193g",
                            "xn--gmqw5a.xn--j6w193g")),
    ("http://faß.de/", ok("http", "xn--fa-hia.de", None, "xn--fa-hia.de", "de")),
    ("http://☃.net/", ok("http", "xn--n3h.net", None, "xn--n3h.net", "net")),
    ("http://EXAMPLE。COM/", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("http://ｅｘａｍｐｌｅ.com/", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("http://ex%61mple.com/", ok("http", "example.com", None, *EXAMPLE_COM)),
    # trailing dot: one is the root, two is an empty label
    ("https://www.example.com./", ok("https", "www.example.com", None, *EXAMPLE_COM)),
    ("https://www.example.com../", fail("invalid_host", "https")),
    ("https://.example.com/", fail("invalid_host", "https")),
    ("https://a..example.com/", fail("invalid_host", "https")),
    # suffix edge cases
    ("http://localhost:3000/", ok("http", "localhost", 3000)),
    ("http://intranet/", fail("secret_like", "http")),
    ("http://co.uk/", ok("http", "co.uk", None, None, "co.uk")),
    ("http://city.kawasaki.jp/", ok("http", "city.kawasaki.jp", None, "city.kawasaki.jp", "kawasaki.jp")),
    ("http://a.b.kawasaki.jp/", ok("http", "a.b.kawasaki.jp", None, "a.b.kawasaki.jp", "b.kawasaki.jp")),
    ("http://x.blogspot.com/", ok("http", "x.blogspot.com", None, "blogspot.com", "com")),
    ("http://_dmarc.example.com/", ok("http", "_dmarc.example.com", None, *EXAMPLE_COM)),
    # forbidden host characters, percent-decoded ones included
    ("http://alice%40evil.com/", fail("invalid_host", "http")),
    ("http://alice％40evil.com/", fail("invalid_host", "http")),
    ("http://alice＠evil.com/", fail("invalid_host", "http")),
    ("http://a%2540b.com/", fail("invalid_host", "http")),
    ("http://%zz.com/", fail("invalid_host", "http")),
    ("http://exa%20mple.com/", fail("invalid_host", "http")),
    ("http://exa%2Fmple.com/", fail("invalid_host", "http")),
    ("http://exa%00mple.com/", fail("invalid_host", "http")),
    ("http://%FF.com/", fail("invalid_host", "http")),
    ("http://exa<mple.com/", fail("invalid_host", "http")),
    ("http://exa>mple.com/", fail("invalid_host", "http")),
    ("http://exa^mple.com/", fail("invalid_host", "http")),
    ("http://exa|mple.com/", fail("invalid_host", "http")),
    ('http://exa"mple.com/', fail("invalid_host", "http")),
    ("http://exa*mple.com/", fail("invalid_host", "http")),
    ("http://host;jsessionid=abc/", fail("invalid_host", "http")),
    ("http://example.com:80:80/", fail("invalid_host", "http")),
    ("http://" + "a" * 63 + ".com/", ok("http", "a" * 63 + ".com", None, "a" * 63 + ".com", "com")),
    ("http://" + "a" * 64 + ".com/", fail("invalid_host", "http")),
    ("http://" + ".".join(["a" * 63] * 4) + "/", fail("invalid_host", "http")),
    ("http:", fail("invalid_host", "http")),
    ("https://", fail("invalid_host", "https")),
    ("https://alice:pw@/x", fail("invalid_host", "https")),
    ("https://:8080/x", fail("invalid_host", "https")),
    # ports
    ("http://example.com:65536/", fail("invalid_port", "http")),
    ("http://example.com:99999999999999999999/", fail("invalid_port", "http")),
    ("http://example.com:8a/", fail("invalid_port", "http")),
    ("http://example.com:-1/", fail("invalid_port", "http")),
    ("http://example.com: 80/", fail("invalid_port", "http")),
    ("http://example.com:٨٠/", fail("invalid_port", "http")),
    ("http://example.com:8080;jsessionid=abc/", fail("invalid_port", "http")),
    ("http://example.com:" + "0" * 5000 + "81/", ok("http", "example.com", 81, *EXAMPLE_COM)),
    # other hierarchical schemes: authority after //, backslash is not a delimiter
    ("ssh://git@github.com:22/org/repo", ok("ssh", "github.com", 22, "github.com", "com")),
    ("SMB://FileServer.corp.example.com/share$",
     ok("smb", "fileserver.corp.example.com", None, *EXAMPLE_COM)),
    ("smb://server\\share", fail("invalid_host", "smb")),
    ("rdp://10.0.0.5:3389", ok("rdp", "10.0.0.5", 3389)),
    ("ldap://[2001:db8::7]/c=GB?objectClass?one", ok("ldap", "2001:db8::7")),
    ("sftp://alice:pw@files.example.com:2222/home/alice",
     ok("sftp", "files.example.com", 2222, *EXAMPLE_COM)),
    ("git+ssh://git@github.com/org/repo.git", ok("git+ssh", "github.com", None, "github.com", "com")),
    ("chrome-extension://abcdefghijklmnop/popup.html", fail("secret_like", "chrome-extension")),
    ("ssh://", fail("invalid_host", "ssh")),
    ("a" * 40 + "://example.com/", fail("invalid")),
    # no scheme: scheme-relative and host-first
    ("//example.com/path", ok(None, "example.com", None, *EXAMPLE_COM)),
    ("//alice:pw@example.com:8080/path", ok(None, "example.com", 8080, *EXAMPLE_COM)),
    ("\\\\fileserver\\share\\alice\\doc.txt", fail("secret_like")),
    ("///example.com/x", ok(None, "example.com", None, *EXAMPLE_COM)),
    ("www.example.com/path?x=1", ok(None, "www.example.com", None, *EXAMPLE_COM)),
    ("Example.COM", ok(None, "example.com", None, *EXAMPLE_COM)),
    ("alice@example.com", ok(None, "example.com", None, *EXAMPLE_COM)),
    ("alice:pw@example.com/x", ok(None, "example.com", None, *EXAMPLE_COM)),
    ("alice:1234@example.com", ok(None, "example.com", None, *EXAMPLE_COM)),
    ("localhost:8080/x", ok(None, "localhost", 8080)),
    ("example.com:443", ok(None, "example.com", 443, *EXAMPLE_COM)),
    ("[::1]:8080/x", ok(None, "::1", 8080)),
    ("10.0.0.1:8080", ok(None, "10.0.0.1", 8080)),
    ("/login?user=alice&password=x", fail("invalid_host")),
    ("?token=abc", fail("invalid_host")),
    ("#frag", fail("invalid_host")),
    ("just some words", fail("invalid_host")),
    # non-hierarchical: only the scheme
    ("mailto:alice@example.com?subject=hi", UrlParts("mailto", None, None, None, None, "opaque")),
    ("MAILTO:Alice@Example.com", UrlParts("mailto", None, None, None, None, "opaque")),
    ("javascript:alert(document.cookie)", UrlParts("javascript", None, None, None, None, "opaque")),
    ("javascript://%0Aalert(1)", UrlParts("javascript", None, None, None, None, "opaque")),
    ("data:text/html;base64,PHNjcmlwdD4=", UrlParts("data", None, None, None, None, "opaque")),
    ("tel:+15551234567", UrlParts("tel", None, None, None, None, "opaque")),
    ("tel:5551234", UrlParts("tel", None, None, None, None, "opaque")),
    ("about:blank", UrlParts("about", None, None, None, None, "opaque")),
    ("blob:https://example.com/550e8400-e29b", UrlParts("blob", None, None, None, None, "opaque")),
    ("view-source:https://alice:pw@example.com/", UrlParts("view-source", None, None, None, None, "opaque")),
    ("file:///C:/Users/alice/secret.txt", UrlParts("file", None, None, None, None, "opaque")),
    ("file://fileserver/share/alice", UrlParts("file", None, None, None, None, "opaque")),
    ("FILE://alice:pw@host/x", UrlParts("file", None, None, None, None, "opaque")),
    ("C:\\Users\\alice\\Downloads\\a.html", UrlParts("file", None, None, None, None, "opaque")),
    ("ms-settings:privacy-webcam", UrlParts("ms-settings", None, None, None, None, "opaque")),
    ("ms-word:ofe|u|https://alice:pw@example.com/d.docx",
     UrlParts("ms-word", None, None, None, None, "opaque")),
    # unknown opaque scheme: the "scheme" may be a user name, so it is dropped
    ("alice:hunter2", UrlParts(None, None, None, None, None, "opaque")),
    ("alice:hun/ter2@example.com", UrlParts(None, None, None, None, None, "opaque")),
    ("ssh:\\\\host", UrlParts(None, None, None, None, None, "opaque")),
    # empty and garbage
    ("", UrlParts(None, None, None, None, None, "empty")),
    ("   ", UrlParts(None, None, None, None, None, "empty")),
    ("\t\r\n\x00\x0b\x0c ", UrlParts(None, None, None, None, None, "empty")),
    ("http://\ud800.com/", fail("invalid_host", "http")),
    ("\ud800\udfff\x00\x7f", fail("invalid_host")),
    ("http://\U0001f600\u200b.com/", ok("http", "xn--e28h.com", None, "xn--e28h.com", "com")),
    ("http://\u0000", fail("invalid_host", "http")),
    ("\ufeffhttp://example.com/\ufeff", ok("http", "example.com", None, *EXAMPLE_COM)),
    ("http://exam\ufeffple.com/", ok("http", "example.com", None, *EXAMPLE_COM)),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_sanitize_table(san: UrlSanitizer, raw: str, expected: UrlParts) -> None:
    assert san.sanitize(raw) == expected


REDUCE_CASES = [
    ("https://alice:pw@www.example.com/a?b#c", "https://www.example.com"),
    ("HTTP://Example.com:8080/x", "http://example.com:8080"),
    ("http://example.com:80/x", "http://example.com"),
    ("https://[2001:db8::1]:8443/x", "https://[2001:db8::1]:8443"),
    ("http://[::1]/x", "http://[::1]"),
    ("http://0x7f.1/", "http://127.0.0.1"),
    ("//alice@example.com:81/p", "//example.com:81"),
    ("www.example.com/p?q", "//www.example.com"),
    ("ssh://git@github.com:22/x", "ssh://github.com:22"),
    ("mailto:alice@example.com", "mailto:"),
    ("file://host/alice", "file:"),
    ("javascript:alert(1)", "javascript:"),
    ("alice:hunter2", None),
    ("", None),
    ("http://alice%40evil.com/", None),
    ("http://example.com:99999/", None),
    ("http://bücher.de/", "http://xn--bcher-kva.de"),
]


@pytest.mark.parametrize(("raw", "expected"), REDUCE_CASES)
def test_reduce_table(san: UrlSanitizer, raw: str, expected: str | None) -> None:
    assert san.reduce(raw) == expected


def test_huge_inputs_are_safe(san: UrlSanitizer) -> None:
    assert san.sanitize("http://" + "a" * 1_000_000) == fail("invalid_host", "http")
    assert san.sanitize("http://example.com/" + "x" * 5_000_000).host == "example.com"
    assert san.sanitize("a" * 1_000_000) == fail("invalid_host")
    assert san.sanitize("a" * 1_000_000 + ":x") == UrlParts(None, None, None, None, None, "opaque")
    assert san.sanitize("http://" + "1" * 100_000) == fail("invalid_host", "http")
    assert san.sanitize("http://example.com:" + "9" * 100_000) == fail("invalid_port", "http")
    assert san.sanitize("http://" + "@" * 100_000 + "example.com").host == "example.com"
    assert san.sanitize("http://" + "ü" * 10_000 + ".com") == fail("invalid_host", "http")
    assert san.sanitize("\t" * 100_000) == UrlParts(None, None, None, None, None, "empty")


def test_long_inputs_are_not_cached(extractor) -> None:
    s = UrlSanitizer(extractor)
    s.sanitize("https://example.com/" + "x" * 5000)
    s.sanitize("https://example.com/short")
    assert list(s._urls) == ["https://example.com/short"]


@pytest.mark.parametrize("value", [None, b"http://example.com", 42, ["http://example.com"]])
def test_non_strings_are_invalid_not_errors(san: UrlSanitizer, value) -> None:
    assert san.sanitize(value) == fail("invalid")
    assert san.reduce(value) is None


def test_repeated_url_is_served_from_cache(extractor) -> None:
    s = UrlSanitizer(extractor)
    first = s.sanitize("https://alice@www.example.com/x")
    assert s.sanitize("https://alice@www.example.com/x") is first
    assert s._hosts == {"www.example.com": ("example.com", "com")}


def test_caches_are_bounded(extractor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urls, "HOST_CACHE_LIMIT", 10)
    monkeypatch.setattr(urls, "URL_CACHE_LIMIT", 10)
    s = UrlSanitizer(extractor)
    for i in range(100):
        assert s.sanitize(f"https://h{i}.example.com/").registered_domain == "example.com"
        assert len(s._hosts) <= 10 and len(s._urls) <= 10


def test_lazy_extractor_and_cheap_pickle(extractor) -> None:
    s = UrlSanitizer()
    assert s._extractor is None  # built on first use, not at construction
    s.sanitize("https://www.example.co.uk/")
    assert s._extractor is not None and s._hosts and s._urls
    blob = pickle.dumps(s)
    assert len(blob) < 200
    clone = pickle.loads(blob)
    assert clone._extractor is None and not clone._hosts and not clone._urls
    assert clone.sanitize("https://www.example.co.uk/") == ok(
        "https", "www.example.co.uk", None, "example.co.uk", "co.uk"
    )


def test_suffix_extractor_never_uses_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    ex = make_suffix_extractor()
    assert ex("forums.bbc.co.uk").suffix == "co.uk"


# ---------------------------------------------------------------- properties

MARKER = "zq"
# Secrets start with the marker; host labels are drawn without `z`, so no host can contain one.
secrets = st.from_regex(r"zq[A-Za-z0-9]{6,12}", fullmatch=True)
_label = st.from_regex(r"[a-y0-9](?:[a-y0-9\-]{0,10}[a-y0-9])?", fullmatch=True)
_tld = st.sampled_from(["com", "net", "org", "de", "co.uk", "jp", "example", "local", "xn--p1ai"])


@st.composite
def domain_hosts(draw) -> tuple[str, str]:
    labels = draw(st.lists(_label, min_size=1, max_size=3))
    name = ".".join(labels) + "." + draw(_tld)
    if not any(c.isalpha() for c in name.rsplit(".", 1)[-1]):
        name += ".com"
    mixed = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    return mixed, name


@st.composite
def ipv4_hosts(draw) -> tuple[str, str]:
    ip = str(draw(st.ip_addresses(v=4)))
    return ip, ip


@st.composite
def ipv6_hosts(draw) -> tuple[str, str]:
    ip = draw(st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None))
    zone = draw(st.sampled_from(["", "%25eth0", "%251"]))
    spelled = ip.exploded if draw(st.booleans()) else ip.compressed
    return f"[{spelled}{zone}]", ip.compressed


IDN_HOSTS = [
    ("bücher.example.de", "xn--bcher-kva.example.de"),
    ("例え.jp", "xn--r8jz45g.jp"),
    ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
    ("%E4%BE%8B%E3%81%88.jp", "xn--r8jz45g.jp"),
]
hosts = st.one_of(domain_hosts(), ipv4_hosts(), ipv6_hosts(), st.sampled_from(IDN_HOSTS))

SPECIAL = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
HIERARCHICAL = ["ssh", "smb", "rdp", "ldap", "sftp", "git"]


@st.composite
def secret_urls(draw) -> tuple[str, list[str], str | None, str | None]:
    """(url, the secrets in it, expected scheme, host and port)."""
    user, password, token, session, frag, path = (draw(secrets) for _ in range(6))
    raw_host, host = draw(hosts)
    shape = draw(st.sampled_from(["special", "other", "relative", "bare"]))
    scheme = None
    if shape == "special":
        scheme = draw(st.sampled_from(sorted(SPECIAL)))
        sep = draw(st.sampled_from(["//", "\\\\", "/\\", "///", ""]))
    elif shape == "other":
        scheme = draw(st.sampled_from(HIERARCHICAL))
        sep = "//"
    elif shape == "relative":
        sep = draw(st.sampled_from(["//", "\\\\"]))
    else:
        sep = ""
    userinfo = draw(st.sampled_from([
        f"{user}:{password}@",
        f"{user}@",
        f":{password}@",
        f"{user}:{password}@{user}@",
        f"{user}@{password}@",
        f"{user}%3A{password}%40@",
        f"{user}%40corp.example:{password}@",
        f"{user}:{password}%40@",
        f"{user}:@",
        "",
    ]))
    if shape == "bare" and userinfo == "" and draw(st.booleans()):
        userinfo = f"{user}:{password}@"
    port = draw(st.one_of(st.none(), st.integers(0, 65535)))
    port_text = "" if port is None else f":{port}"
    tail = draw(st.sampled_from([
        f"/{path}?token={token}&sessionid={session}#{frag}",
        f"/{path};jsessionid={session}?q={token}",
        f"?token={token}",
        f"#{frag}",
        f"/{user}/{password}",
        f"/login?user={user}&password={password}",
        f"/?email={user}@evil.example&pw={password}",
        f"/{path}#access_token={token}&user={user}",
        "",
    ]))
    if scheme in SPECIAL or scheme is None:
        if draw(st.booleans()):
            tail = tail.replace("/", "\\")
    if scheme is not None and draw(st.booleans()):
        scheme_text = "".join(c.upper() if draw(st.booleans()) else c for c in scheme)
    else:
        scheme_text = scheme or ""
    prefix = f"{scheme_text}:" if scheme else ""
    url = f"{prefix}{sep}{userinfo}{raw_host}{port_text}{tail}"
    # browsers drop tab/LF/CR anywhere: sprinkle some in, and padding at the ends
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(url)))
        url = url[:i] + draw(st.sampled_from(["\t", "\n", "\r"])) + url[i:]
    url = draw(st.sampled_from(["", " ", "\x00", "\x1f "])) + url + draw(st.sampled_from(["", " ", "\x0c"]))
    if port is not None and scheme is not None and SPECIAL.get(scheme) == port:
        port = None
    return url, [user, password, token, session, frag, path], scheme, host, port


def _assert_no_secret(secrets_: list[str], parts: UrlParts, reduced: str | None) -> None:
    outputs = [str(v).lower() for v in parts if v is not None]
    if reduced is not None:
        outputs.append(reduced.lower())
    for secret in secrets_:
        for out in outputs:
            assert secret.lower() not in out, (secret, parts, reduced)
    assert MARKER not in "".join(outputs)


@PROPERTY_SETTINGS
@given(case=secret_urls())
def test_no_secret_survives_and_host_is_kept(san: UrlSanitizer, case) -> None:
    url, secrets_, scheme, host, port = case
    parts = san.sanitize(url)
    reduced = san.reduce(url)
    _assert_no_secret(secrets_, parts, reduced)
    assert parts.status == "ok", url
    assert (parts.scheme, parts.host, parts.port) == (scheme, host, port), url


OPAQUE_SCHEMES = ["mailto", "javascript", "data", "tel", "about", "blob", "file", "view-source"]


@PROPERTY_SETTINGS
@given(
    scheme=st.sampled_from(OPAQUE_SCHEMES),
    sep=st.sampled_from(["", "//", "///"]),
    user=secrets,
    password=secrets,
    token=secrets,
    host=domain_hosts(),
)
def test_opaque_urls_keep_only_the_scheme(san, scheme, sep, user, password, token, host) -> None:
    url = f"{scheme.upper()}:{sep}{user}:{password}@{host[0]}/x?token={token}"
    parts = san.sanitize(url)
    assert parts == UrlParts(scheme, None, None, None, None, "opaque")
    assert san.reduce(url) == f"{scheme}:"


@PROPERTY_SETTINGS
@given(first=secrets, second=secrets, host=domain_hosts())
def test_unknown_scheme_that_is_a_user_name_is_dropped(san, first, second, host) -> None:
    for url in (f"{first}:{second}", f"{first}:{second}@{host[0]}/x", f"{first}:{second}/{host[0]}"):
        _assert_no_secret([first, second], san.sanitize(url), san.reduce(url))


@PROPERTY_SETTINGS
@given(secret=secrets, host=domain_hosts())
def test_percent_encoded_at_in_host_never_passes(san, secret, host) -> None:
    for at in ("%40", "%2540", "\uff20", "%EF%BC%A0"):  # \uff20: fullwidth @
        url = f"https://{secret}{at}{host[0]}/"
        parts = san.sanitize(url)
        assert parts == fail("invalid_host", "https"), url
        _assert_no_secret([secret], parts, san.reduce(url))


URLISH = st.text(alphabet=st.sampled_from(list("htps:/\\@[]%.:?#0123456789aAzZ.-_ \t\x00ü例")), max_size=40)


@PROPERTY_SETTINGS
@given(raw=st.one_of(st.text(), URLISH))
def test_never_raises_and_reduce_is_stable(san: UrlSanitizer, raw: str) -> None:
    parts = san.sanitize(raw)
    assert isinstance(parts, UrlParts) and parts.status in STATUSES
    if parts.status != "ok":
        assert parts[1:5] == (None, None, None, None)
    elif parts.host is not None:
        assert parts.host == parts.host.strip().lower() and parts.host.isascii()
        assert "@" not in parts.host and "%" not in parts.host and "[" not in parts.host
    reduced = san.reduce(raw)
    if reduced is not None:
        again = san.sanitize(reduced)
        assert (again.scheme, again.host, again.port, again.status) == (*parts[:3], parts.status)


def test_repeated_hosts_are_resolved_once(extractor) -> None:
    """Repeated hosts must be cheap: the suffix lookup runs once per distinct host."""
    s = UrlSanitizer(extractor)
    batch = [f"https://u{i % 50}:pw@h{i % 200}.example.co.uk/p/{i}?t={i}" for i in range(20_000)]
    for raw in batch:
        s.sanitize(raw)
    assert len(s._hosts) == 200


def test_fields_match_the_policy_columns() -> None:
    """The `url` transform writes the tuple positionally into `<field>_<part>` columns."""
    policy = pytest.importorskip("schemas.policy")
    assert UrlParts._fields == policy.URL_PARTS


SECRET_HOSTS = [
    "AKIAZQ7D3F5H2J4K6L8M",                                           # cloud access key id
    "ghp_Zq01234567890abcdefABCDEFghijklmnopq",                       # source-hosting token
    "xoxb-123456789012-1234567890123-ZqAbCdEfGhIjKlMnOpQrStUv",       # chat bot token
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ6cSJ9.Zq0123456789abcdefABCDEFghij",  # JWT: has dots
    "S-1-5-21-1234567-2345678-3456789-1001",                          # account SID
    "Zq7mK2pQ9xL4vN8bR3tW6yH1cF5gJ0dS",                               # high entropy, no dot
    "Zq7mK2pQ9xL4vN8bR3tW6yH1cF5gJ0dS.example.com",                   # high entropy label
    "AKIAZQ7D3F5H2J4K6L8M.s3.example.com",                            # token as a label
    "%41KIAZQ7D3F5H2J4K6L8M.example.com",                             # percent-encoded
    "alices-laptop",                                                  # a computer name
]


@pytest.mark.parametrize("host", SECRET_HOSTS)
@pytest.mark.parametrize("form", ["https://{h}/x?y", "{h}", "//{h}/x", "https://u:p@{h}:8443/", "ws://{h}"])
def test_a_host_that_is_a_token_is_not_kept(san: UrlSanitizer, host: str, form: str) -> None:
    """A bare token where the host goes (a blocked_url of `AKIA...`) fails closed: no host, no
    domain, status secret_like, and nothing of it in the text form either."""
    raw = form.format(h=host)
    parts = san.sanitize(raw)
    assert parts.status == "secret_like" and parts[1:5] == (None, None, None, None), raw
    assert san.reduce(raw) is None
    assert san.authority("https", host).status == "secret_like"


@pytest.mark.parametrize("raw, host", [
    ("http://localhost:8080/x", "localhost"), ("chrome://settings/", "settings"), ("edge://flags", "flags"),
    ("https://d3kdm2lq9ef0hb.cloudfront.net/a.js", "d3kdm2lq9ef0hb.cloudfront.net"),
    ("https://www.Example.com/", "www.example.com"), ("http://10.0.0.1/", "10.0.0.1"), ("http://[::1]/", "::1"),
    ("https://xn--bcher-kva.de/", "xn--bcher-kva.de"),
])
def test_hosts_that_name_a_place_are_kept(san: UrlSanitizer, raw: str, host: str) -> None:
    assert (san.sanitize(raw).status, san.sanitize(raw).host) == ("ok", host)
