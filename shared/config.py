"""Configuration of one daemon instance: one TOML file, every key declared with default and meaning.

Keys are declared (not free-form) so that a typo in an operator's file is an error at start-up
rather than a silently ignored setting, and so that `sivr init` can write files in which every key
is documented with its default.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Key:
    """One configuration key: `section.name`, its default and what it means.

    `minimum`/`maximum` (inclusive; `minimum` exclusive with `above`) and `choices` are checked when
    the file is read, so a value the server cannot use (port 70000, no workers, a negative size)
    stops `sivr` with the file and the key named instead of failing later in gunicorn or a worker.

    `retired` (non-empty: why, and what replaces it) marks a key whose feature was removed: it stays
    declared so that an operator's file still naming it gets this reason rather than "unknown key";
    its default (what files written before held) is still accepted and means nothing, any other
    value stops `sivr`. Files written now leave it out (`render_config_toml`).
    """

    section: str
    name: str
    default: Any
    doc: str
    is_path: bool = False
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    choices: tuple[str, ...] = ()
    retired: str = ""

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    def allowed(self, value: Any) -> str | None:
        """What the value must be when it is out of bounds or not a choice (None: it may be used)."""
        if self.choices and (not isinstance(value, str) or value.lower() not in self.choices):
            return f"one of {', '.join(self.choices)}"
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        low, high = self.minimum, self.maximum
        if low is not None and (value <= low if self.above else value < low):
            return (f"above {_number(low)}" if self.above else
                    f"from {_number(low)} to {_number(high)}" if high is not None else f"at least {_number(low)}")
        if high is not None and value > high:
            return f"from {_number(low)} to {_number(high)}" if low is not None else f"at most {_number(high)}"
        return None


def _number(bound: float) -> str:
    """A bound as an operator writes it: whole numbers in full (16777215, not 1.67772e+07)."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


PORT_MAX = 65535


COMMON_KEYS: tuple[Key, ...] = (
    Key("server", "host", "127.0.0.1", "Address to listen on."),
    Key("server", "port", 0, "TCP port to listen on (0: the layer's default port).", minimum=0, maximum=PORT_MAX),
    Key("server", "workers", 2, "gunicorn worker processes.", minimum=1),
    Key("server", "threads", 8, "Threads per gunicorn worker (gthread worker class).", minimum=1),
    Key("server", "timeout_s", 60, "gunicorn worker timeout in seconds (0: none, as gunicorn reads it).", minimum=0),
    Key("server", "http2", False,
        "Retired (was: serve HTTP/2 with hypercorn in one process instead of gunicorn).",
        retired="the layer's own HTTP/2 server (hypercorn) was retired on 2026-12-01 after unauthenticated "
                "denial-of-service findings; HTTP/2 is served by the nginx front (`sivr init --front`, "
                "docs/deployment.md). Remove the line or set it to false"),
    Key("server", "keepalive_s", 30, "Seconds an idle keep-alive connection stays open (browsers reuse them).",
        minimum=0),
    Key("server", "tls_cert", "", "PEM certificate chain for TLS; empty only behind a TLS proxy.", True),
    Key("server", "tls_key", "", "PEM private key for TLS (mode 0600).", True),
    Key("server", "max_request_mb", 16, "Largest request body accepted, in MiB.", minimum=1),
    Key("server", "trusted_proxies", 0,
        "Reverse proxies in front of this server whose X-Forwarded-For/-Proto are believed (0: none).", minimum=0),
    Key("server", "proxy_secret_file", "",
        "With trusted_proxies: a file holding the secret the proxy sends in X-Sivr-Front; requests without "
        "it (another local process reaching the loopback backend) have their X-Forwarded-For ignored.", True),
    Key("cors", "origins", [], "Browser origins allowed to call this layer (e.g. the web layer's URL)."),
    Key("tokens", "public_key", "", "Ed25519 public key (PEM) that verifies access tokens.", True),
    Key("tokens", "extra_public_keys", [],
        "More public keys accepted during a signing-key rotation (the next key, then the retired one).", True),
    Key("tokens", "issuer", "sivr-toplevel", "Expected `iss` claim of access tokens."),
    Key("tokens", "audience", "",
        "This server's public base URL as clients call it (e.g. https://inst-a.example:5002): the only `aud` "
        "this layer accepts. Required on every layer that verifies tokens; each server needs its own."),
    Key("tokens", "leeway_s", 5, "Clock skew tolerated when checking token times, in seconds.", minimum=0),
    Key("log", "level", "info", "Log level: debug, info, warning, error, critical (any case).",
        choices=("debug", "info", "warning", "error", "critical")),
    Key("metrics", "allow", ["127.0.0.1", "::1"],
        "Addresses or networks (CIDR) that may read GET /metrics without a token."),
    Key("metrics", "token_file", "",
        "File holding a bearer token (16+ characters) that also lets a scraper read /metrics from anywhere.", True),
    Key("audit", "syslog", "",
        "Central syslog receiving every audit entry (RFC 5424): udp://host:514, tcp://host:601 or tls://host:6514; "
        "empty: the audit log stays in this layer's database only."),
    Key("audit", "syslog_ca", "", "CA certificate (PEM) that vouches for a tls:// syslog server (empty: system CAs).",
        True),
)

DEFAULT_PORTS = {"web": 5000, "toplevel": 5001, "institution": 5002, "render": 5003}


class Config(dict):
    """Nested mapping `section -> key -> value` with every declared key present."""

    def __init__(self, values: dict[str, dict[str, Any]], layer: str, source: Path | None):
        super().__init__(values)
        self.layer = layer
        self.source = source

    def get_key(self, dotted: str) -> Any:
        section, name = dotted.split(".", 1)
        return self[section][name]


def _coerce(key: Key, value: Any, source: str) -> Any:
    expected = type(key.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(
            f"{source}: `{key.dotted}` must be of type {expected.__name__}, got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        # NaN passes every bound (each comparison with it is false): `audit.flush_s = nan` made the
        # flush thread spin on two cores, `decode.timeout_s = nan` every compressed upload a 500
        raise ConfigError(f"{source}: `{key.dotted}` must be a finite number, got {value!r}")
    if key.is_path and isinstance(value, list) and not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{source}: `{key.dotted}` must be a list of file paths")
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{source}: `{key.dotted}` must be a list of strings")
    if key.retired and value != key.default:
        raise ConfigError(f"{source}: {key.dotted} = {_toml_value(value)} is no longer supported: {key.retired}")
    allowed = key.allowed(value)
    if allowed is not None:
        raise ConfigError(f"{source}: {key.dotted} must be {allowed}, got {value!r}")
    return value


def build_config(
    layer: str,
    keys: Iterable[Key],
    values: dict[str, Any] | None = None,
    source: Path | None = None,
) -> Config:
    """Merge `values` (as parsed from TOML) over the declared defaults, rejecting unknown keys.

    Relative paths are resolved against the config file's folder so that a deployment folder can
    be moved as a whole.
    """
    values = values or {}
    where = str(source) if source else "<config>"
    declared = {(k.section, k.name): k for k in (*COMMON_KEYS, *keys)}
    result: dict[str, dict[str, Any]] = {}
    for (section, name), key in declared.items():
        result.setdefault(section, {})[name] = key.default
    for section, body in values.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: `{section}` must be a [section] table")
        for name, value in body.items():
            found = declared.get((section, name))
            if found is None:
                raise ConfigError(f"{where}: unknown key `{section}.{name}`")
            key = found
            value = _coerce(key, value, where)
            if key.is_path and value and source is not None:
                value = ([str((source.parent / item).resolve()) for item in value] if isinstance(value, list)
                         else str((source.parent / value).resolve()))
            result[section][name] = value
    if result["server"]["port"] == 0:
        result["server"]["port"] = DEFAULT_PORTS.get(layer, 0)
    return Config(result, layer, source)


def load_config(path: str | Path, layer: str, keys: Iterable[Key]) -> Config:
    """Read one instance's TOML file; errors name the file and the offending key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except OSError as exc:  # a folder, no permission
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}), as TOML must be") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}{_repeated_key_hint(text, str(exc))}") from exc
    return build_config(layer, keys, data, path.resolve())


_OVERWRITE_AT = re.compile(r"^Cannot overwrite a value \(at line (\d+), column \d+\)$")


def _repeated_key_hint(text: str, message: str) -> str:
    """What to do about a key set twice, which tomllib reports without naming it.

    Every config `sivr init` writes sets each key once, with its default (`extra_public_keys = []`
    under `[tokens]`): an operator who adds a line for it, as a rotation step once read, got
    "Cannot overwrite a value (at line 36, column 23)" from every unit, and none started."""
    found = _OVERWRITE_AT.match(message)
    lines = text.splitlines()
    if found is None or not 0 < int(found.group(1)) <= len(lines):
        return ""
    key = lines[int(found.group(1)) - 1].partition("=")[0].strip()
    return (f": line {found.group(1)} sets {key} a second time in its table; keep one line for it "
            f"(change the value of the line already there instead of adding another)")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def render_config_toml(layer: str, keys: Iterable[Key], values: dict[str, dict[str, Any]]) -> str:
    """A complete, commented config file: every key, its meaning and default, then its value."""
    all_keys = (*COMMON_KEYS, *keys)
    lines = [f"# SIVR {layer} layer configuration. Every key is listed with its meaning and default."]
    sections: dict[str, list[Key]] = {}
    for key in all_keys:
        sections.setdefault(key.section, []).append(key)
    for section, section_keys in sections.items():
        lines.append("")
        lines.append(f"[{section}]")
        for key in section_keys:
            if key.retired and key.name not in values.get(section, {}):
                continue  # not written into new files; kept where given, so that its refusal still holds
            lines.append(f"# {key.doc} Default: {_toml_value(key.default)}")
            value = values.get(section, {}).get(key.name, key.default)
            lines.append(f"{key.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
