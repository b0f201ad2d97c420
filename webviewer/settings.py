"""Configuration keys of the web layer (beyond the common ones in shared.config)."""

from shared.config import Key

KEYS = (
    Key("web", "toplevel_url", "https://127.0.0.1:5001",
        "URL of the toplevel server, given to browsers in /config.json."),
    Key("web", "connect_origins", [],
        "URLs of the institution servers and render nodes the viewer may call (the page's CSP connect-src, "
        "besides the toplevel); empty: any https origin (a warning at start-up). `sivr init` fills it."),
)
