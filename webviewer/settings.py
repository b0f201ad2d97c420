"""Configuration keys of the web layer (beyond the common ones in shared.config)."""

from shared.config import Key

KEYS = (
    Key("web", "toplevel_url", "https://127.0.0.1:5001",
        "URL of the toplevel server, given to browsers in /config.json."),
)
