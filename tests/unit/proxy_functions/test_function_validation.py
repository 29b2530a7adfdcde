"""The pure rules of functions/validation.py: slugs, target URLs, headers, mappings, origins, bodies."""

from __future__ import annotations

import ipaddress

import pytest

from functions.errors import InvalidFunction
from functions.models import HttpMethod, InjectAs
from functions.validation import (
    AllowedHosts,
    FunctionRules,
    check_body_mappings,
    check_body_template,
    check_headers,
    check_mappings_shape,
    check_origins,
    check_timeout,
    literal_ip,
    normalise_origin,
    slugify,
    target_url_problem,
)

NONE = AllowedHosts()
TESTS = AllowedHosts.parse(["127.0.0.1/32", "::1/128", "internal.example"])


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Brevo Email Sender", "brevo-email-sender"),
        ("  Stripe -- Charges!! ", "stripe-charges"),
        ("OpenAI/GPT_4o", "openai-gpt-4o"),
        ("Ünïcode naïve", "n-code-na-ve"),
        ("x" * 60, "x" * 50),
        ("a" * 49 + " b", "a" * 49),  # the cut leaves no trailing dash
        ("!!!", ""),
    ],
)
def test_slugify_follows_envmanager(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "required"),
        ("ftp://api.example.com/x", "https://"),
        ("file:///etc/passwd", "https://"),
        ("javascript:alert(1)", "https://"),
        ("/relative/path", "https://"),
        ("http://api.example.com/x", "must use https"),
        ("https://user:pw@api.example.com/", "user name"),
        ("https://api.example.com/x#frag", "fragment"),
        ("https://api.example.com/a b", "spaces"),
        ("https://api.example.com/\x00", "control"),
        ("https://api.example.com:99999/", "port"),
        ("https://api.example.com:0/", "port"),
        ("https://10.0.0.1/", "private"),
        ("https://127.0.0.1/", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://[::1]/", "private"),
        ("https://[::ffff:10.0.0.1]/", "private"),
        ("https://[fe80::1]/", "private"),
        ("https://2130706433/", "private"),  # 127.0.0.1, decimal
        ("https://0177.0.0.1/", "private"),  # octal
        ("https://0x7f.1/", "private"),  # hex, short form
        ("https://224.0.0.1/", "private"),
        ("https://localhost/", "localhost"),
        ("https://api.localhost/", "localhost"),
        ("https://exa mple.com/", "spaces"),
        ("https://bad_host!.com/", "host name"),
        ("https://" + "a" * 2000 + ".com/", "2000"),
    ],
)
def test_target_url_problem_refuses_what_is_visibly_wrong(url: str, fragment: str) -> None:
    problem = target_url_problem(url, NONE)
    assert problem is not None and fragment in problem, (url, problem)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.stripe.com/v1/charges",
        "HTTPS://API.EXAMPLE.COM:8443/path?x=1&y=%20",
        "https://8.8.8.8/dns",
        "https://[2606:4700::1111]/",
        "https://my_service.example.com/",
    ],
)
def test_target_url_problem_accepts_public_https(url: str) -> None:
    assert target_url_problem(url, NONE) is None


def test_target_url_problem_allowed_hosts_open_http_and_private_addresses() -> None:
    for url in ("http://127.0.0.1:8080/x", "https://127.0.0.1/", "http://[::1]:9/", "http://internal.example/"):
        assert target_url_problem(url, TESTS) is None, url
        assert target_url_problem(url, NONE) is not None, url
    assert target_url_problem("http://2130706433/", TESTS) is None  # the same address, another spelling
    assert target_url_problem("http://10.0.0.1/", TESTS) is not None


def test_literal_ip_reads_every_ipv4_spelling() -> None:
    loopback = ipaddress.IPv4Address("127.0.0.1")
    for text in ("127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f.1", "127.1"):
        assert literal_ip(text) == loopback, text
    assert literal_ip("[::1]") == ipaddress.IPv6Address("::1")
    for name in ("cafe", "example.com", "deadbeef.example", "1e100.net"):
        assert literal_ip(name) is None, name


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"": "x"}, "is empty"),
        ({"Bad Header": "x"}, "valid HTTP header name"),
        ({"X-Ünicode": "x"}, "valid HTTP header name"),
        ({"Host": "evil.example"}, "connection-level"),
        ({"content-length": "5"}, "connection-level"),
        ({"Transfer-Encoding": "chunked"}, "connection-level"),
        ({"Connection": "close"}, "connection-level"),
        ({"X-A": "one\r\nX-Injected: yes"}, "line breaks"),
        ({"X-A": "nul\x00"}, "line breaks"),
        ({"X-A": "é"}, "visible ASCII"),
        ({"Accept": "a", "accept": "b"}, "twice"),
        ({f"X-{i}": "v" for i in range(51)}, "at most 50"),
    ],
)
def test_check_headers_refuses(headers: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidFunction) as caught:
        check_headers(headers)
    assert caught.value.param == "headers" and fragment in caught.value.message


def test_check_headers_accepts_tokens_and_values() -> None:
    headers = {"Content-Type": "application/json", "X-Api-Version": "2024-01-01", "User-Agent": "MyApp/1.0 (x)\tok"}
    assert check_headers(headers) == headers


@pytest.mark.parametrize(
    ("mappings", "fragment"),
    [
        ([(1, InjectAs.HEADER, "", "")], "secret_mappings[0].key is empty"),
        ([(1, InjectAs.HEADER, "Bad Name", "")], "valid HTTP header name"),
        ([(1, InjectAs.HEADER, "Host", "")], "connection-level"),
        ([(1, InjectAs.BODY, "a..b", "")], "body path"),
        ([(1, InjectAs.BODY, ".a", "")], "body path"),
        ([(1, InjectAs.BODY, ".".join("a" * 11), "")], "deeper"),
        ([(1, InjectAs.QUERY, "k\x00", "")], "control"),
        ([(1, InjectAs.HEADER, "Authorization", "Bearer")], "${value}"),
        ([(1, InjectAs.HEADER, "Authorization", "Bearer ${value}\n")], "control"),
        ([(1, InjectAs.HEADER, "Authorization", "Bé ${value}")], "visible ASCII"),
        (
            [(1, InjectAs.HEADER, "Authorization", ""), (2, InjectAs.HEADER, "authorization", "")],
            "secret_mappings[1]: the header 'authorization' is already set by secret_mappings[0]",
        ),
        ([(1, InjectAs.BODY, "a.b", ""), (2, InjectAs.BODY, "a.b", "")], "already set"),
        ([(i, InjectAs.QUERY, f"k{i}", "") for i in range(21)], "at most 20"),
    ],
)
def test_check_mappings_shape_refuses(mappings: list[tuple[int, InjectAs, str, str]], fragment: str) -> None:
    with pytest.raises(InvalidFunction) as caught:
        check_mappings_shape(mappings)
    assert caught.value.param == "secret_mappings" and fragment in caught.value.message


def test_check_mappings_shape_accepts_every_kind() -> None:
    check_mappings_shape(
        [
            (1, InjectAs.HEADER, "Authorization", "Bearer ${value}"),
            (2, InjectAs.BODY, "credentials.token", ""),
            (3, InjectAs.QUERY, "api_key", "${value}"),
            (4, InjectAs.QUERY, "Api_Key", ""),  # query names are case-sensitive
        ]
    )


def test_check_body_mappings_needs_a_body_and_an_object_template() -> None:
    body = [(1, InjectAs.BODY, "api_key", "")]
    check_body_mappings(body, HttpMethod.POST, {"a": 1})
    check_body_mappings(body, HttpMethod.DELETE, None)
    check_body_mappings([(1, InjectAs.HEADER, "X", "")], HttpMethod.GET, [1, 2])
    with pytest.raises(InvalidFunction, match="GET request has no body"):
        check_body_mappings(body, HttpMethod.GET, None)
    with pytest.raises(InvalidFunction, match="must be a JSON object"):
        check_body_mappings(body, HttpMethod.POST, [1, 2])


@pytest.mark.parametrize(
    ("origin", "stored"),
    [
        ("*", "*"),
        ("https://Example.COM/", "https://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://example.com:80/", "http://example.com"),
        ("*.example.com", "*.example.com"),
        ("https://*.Example.com", "https://*.example.com"),
        ("https://*.example.com:8443", "https://*.example.com:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://10.0.0.5", "https://10.0.0.5"),
    ],
)
def test_normalise_origin(origin: str, stored: str) -> None:
    assert normalise_origin(origin) == stored


@pytest.mark.parametrize(
    ("origin", "fragment"),
    [
        ("", "empty"),
        ("example.com", "needs a scheme"),
        ("ftp://example.com", "http or https"),
        ("https://example.com/path", "without a path"),
        ("https://example.com?x", "without a path"),
        ("https://user@example.com", "without a path"),
        ("https://exa mple.com", "spaces"),
        ("*.com", "at least two labels"),
        ("https://*", "be * alone"),
        ("https://api.*.example.com", "may only open the host"),
        ("https://*.*.example.com", "may only open the host"),
        ("https://example.com:0", "port"),
        ("https://example.com:70000", "port"),
        ("https://example.com:abc", "port"),
        ("https://[::1", "IPv6"),
        ("https://exämple.com", "punycode"),
        ("null", "needs a scheme"),
    ],
)
def test_normalise_origin_refuses(origin: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalise_origin(origin)
    assert fragment in str(caught.value), (origin, caught.value)


def test_check_origins_dedupes_and_names_the_item() -> None:
    assert check_origins(["https://a.example", "HTTPS://A.example/", "*"]) == ["https://a.example", "*"]
    assert check_origins([]) == []
    with pytest.raises(InvalidFunction) as caught:
        check_origins(["https://ok.example", "nope"])
    assert caught.value.param == "allowed_origins" and "allowed_origins[1]" in caught.value.message


def test_check_body_template_bounds_size_and_depth() -> None:
    assert check_body_template(None) is None
    assert check_body_template({"model": "x", "n": [1, {"a": None}]}) == {"model": "x", "n": [1, {"a": None}]}
    assert check_body_template("plain string") == "plain string"
    deep: object = 1
    for _ in range(32):
        deep = [deep]
    assert check_body_template(deep) == deep
    with pytest.raises(InvalidFunction, match="deeper than 32"):
        check_body_template([deep])
    with pytest.raises(InvalidFunction, match="64 KiB"):
        check_body_template({"text": "x" * (64 * 1024)})


def test_check_timeout_follows_the_operator_setting() -> None:
    rules = FunctionRules.from_settings([], 2.5)
    assert check_timeout(2500, rules) == 2500
    with pytest.raises(InvalidFunction, match=r"1\.\.2500"):
        check_timeout(2501, rules)
