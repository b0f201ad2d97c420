"""The CORS origins both doors must answer alike: every layer's `cors.origins` (flask-cors,
tests/shared/test_webapp.py) and the DICOMweb root's `dicomweb.cors_origins`
(tests/dicomweb/test_cors.py), both through `shared.webapp.exact_origin`."""

from __future__ import annotations

#: As an operator may write them: an IPv6 literal, an upper-case host with a trailing `/` (copied
#: from an address bar), the scheme's default port spelled out.
CONFIGURED = ["https://[::1]:8443", "https://OHIF.Example:3000/", "https://desk.example:443"]

#: An Origin header as a client sends it, and whether CONFIGURED allows it. Browsers send scheme and
#: host in lower case and no default port (RFC 6454, Fetch).
SENT = [
    ("https://[::1]:8443", True),
    ("https://ohif.example:3000", True),
    ("https://OHIF.example:3000", True),  # letter case is no part of an origin
    ("https://desk.example", True),
    # none of these is an allowed origin, whatever a prefix, a suffix or a pattern would say
    ("https://1:8443", False),
    ("https://::8443", False),
    ("https://[::1]:84430", False),
    ("https://[::1]:844", False),
    ("http://[::1]:8443", False),
    ("https://ohif.example:30001", False),
    ("https://ohif.example", False),
    ("https://ohif.example.evil:3000", False),
    ("https://evil-ohif.example:3000", False),
    ("https://de\u017fk.example", False),  # U+017F folds to `s` in Unicode, never in an origin
]
