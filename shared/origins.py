"""Origins of configured URLs, as browsers serialize them (RFC 6454 section 6.2, Fetch).

One rule for every place that compares where a request goes or comes from: a token's audience
(`shared.tokens.normalize_audience`), the CORS doors (`shared.webapp.exact_origin`), and the web
layer's `connect-src` (webviewer/app.py). Operators copy URLs from address bars and certificates
(`https://Viewer.example:443/`), which no browser sends back as written; three hand-made
versions of this rule had drifted apart (one kept the default port, one upper case, one the path).
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def split_origin(url: str) -> tuple[str, str]:
    """`(origin, path)` of an absolute URL: the origin as browsers send it in the Origin header
    (scheme and host in lower case, the port only when it is not the scheme's default, an IPv6
    host in brackets) and the path as written, without its trailing `/`.

    Raises ValueError, naming the URL, for anything with no scheme or host, with a host beyond
    ASCII (`_refuse_host_beyond_ascii`), a user, query or fragment, with a port outside 0-65535, or
    holding a space or a control character:
    `urlsplit` drops tabs and line breaks unseen and keeps NUL, so the token exchange signed a token
    for an audience no server has, and its audit entry of that audience failed on PostgreSQL (a 500).
    """
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError(f"{url[:200]!r} must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # an unclosed `[`, a port outside 0-65535
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from exc
    host = parts.hostname
    if not parts.scheme or not host:
        raise ValueError(f"{url!r} is not an absolute URL with a scheme and a host")
    _refuse_host_beyond_ascii(url, parts.netloc)
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: an origin or a server's base URL has no user, query or fragment")
    host = f"[{host}]" if ":" in host else host
    suffix = "" if port in (None, DEFAULT_PORTS.get(parts.scheme)) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}", parts.path.rstrip("/")


def _refuse_host_beyond_ascii(url: str, netloc: str) -> None:
    """ValueError for a host written beyond ASCII: an internationalized domain name, say.

    Browsers send such a host in its IDNA form (`xn--`, UTS #46), so no Origin and no request would
    ever name it as written; Python's own `idna` codec is the older IDNA 2003, which spells some
    names (`ß`) otherwise than browsers do. And `urlsplit` lower-cases the host with str.lower(),
    which makes `İ` two characters (a URL that fit its column as sent outgrew it once stored: a 500
    on PostgreSQL) and the Kelvin sign an ASCII `k` (another host than written). The operator writes
    the `xn--` form, as the server's certificate names it."""
    if not netloc.isascii():
        raise ValueError(f"{url[:200]!r}: the host must be written in ASCII; write an internationalized "
                         "domain name in its IDNA form (xn--...), as browsers send it")


def server_base_url(url: str) -> str:
    """An http(s) server's base URL as its origin and path (`https://proxy.example/sivr/node-1`),
    so the URL a client calls and the one a layer is configured with compare equal; ValueError
    for anything but an absolute http:// or https:// URL."""
    origin, path = split_origin(url.strip())
    if urlsplit(origin).scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url!r} is not an http:// or https:// URL of a server")
    return origin + path


def server_origin(url: str) -> str:
    """The origin of an http(s) server's URL, its path dropped (`connect-src`, a request's server)."""
    origin, _ = split_origin(server_base_url(url))
    return origin


def serialized_origin(origin: str) -> str:
    """A configured CORS origin as browsers send it; a value that is no `scheme://host[:port]`
    (the `null` origin, a URL with a path) stays as written and so matches only itself."""
    text = origin.rstrip("/")
    try:
        serialized, path = split_origin(text)
    except ValueError:
        return text
    return text if path else serialized
