"""The TLS and HTTP/2 front of a browser-facing instance: Debian's nginx, one per instance.

gunicorn speaks HTTP/1.1 only, so a browser opens at most six connections to a server and a
viewer's many small image requests queue behind each other on a slow link. Each instance of a
deployment made with a front (`sivr init`, `sivr demo` and the test deployments) is served at its
public URL by nginx, which terminates TLS, speaks HTTP/2 (and HTTP/1.1) chosen by ALPN, and passes
requests over plain HTTP/1.1 keep-alive connections to the instance's gunicorn on loopback
(docs/architecture.md, "HTTP/2 to the browser", says why this and not an HTTP/2 WSGI server).

What the front keeps of gunicorn's behaviour, and what it takes off the backend, by construction:
- a request body is read whole, in memory, before the request goes to the backend (at most
  `BUFFERED_BODY_MB`): gunicorn gives a request a thread from its first byte, and the API's JSON
  bodies trickled in by 24 clients left a toplevel answering nobody, its login included
  (docs/deployment.md, "Slow bodies"). Only the DICOM uploads a layer names
  (`settings.STREAMED_LOCATIONS`: a render node's upload and STOW-RS) are streamed as they arrive
  (`proxy_request_buffering off`), up to the instance's `server.max_request_mb`: the node checks
  and stores them as they come, and a body of gigabytes is never held by the front. Answers are
  streamed (`proxy_buffering off`);
- the body limits are refused by nginx with the API's JSON 413 before anything reaches the app (an
  app refusing a body it has not read makes gunicorn close the connection, which nginx, still
  sending, would turn into a 502); header buffers are larger than gunicorn's limits, so gunicorn's
  JSON 414/431 answer nearly every oversized request (over HTTP/2 a header block over 16 KiB ends
  the connection, as the protocol has it);
- what nginx itself refuses (malformed requests, TLS on the wrong port, a backend that does not
  answer) gets the API's `{"error": {"code", "message"}}` body (`daemons.gunicorn_worker`);
- the client address: nginx REPLACES X-Forwarded-For with the peer's address, and the backend
  believes it because its config says one proxy is in front (`server.trusted_proxies = 1`) and
  the request carries the front's secret (`server.proxy_secret_file`, sent as X-Sivr-Front): the
  backend listens on loopback, which every process of the host reaches, and a request from any of
  them without the secret is served with its own address (`shared.webapp.FromProxyOnly`).
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

from daemons.gunicorn_worker import ERROR_HEADERS, json_error_body
from shared.files import PRIVATE, make_folder, write_atomic
from shared.tls import TLS12_CIPHERS
from shared.webapp import HSTS_HEADER, PROXY_SECRET_HEADER

#: Where the backends of fronted instances listen (plain HTTP, reached only through the front).
BACKEND_HOST = "127.0.0.1"
#: A fixed layout's backend port is its public port plus this (below the ephemeral port range).
BACKEND_PORT_OFFSET = 10000
#: Seconds the front waits on a backend's answer: a 3D still or a series load may be slow.
PROXY_TIMEOUT_S = 300
#: The largest request body the front reads whole before passing it on, held in memory (never in a
#: file): every body but a layer's streamed DICOM uploads. The API's JSON bodies are kilobytes; the
#: largest, a finding at its fields' bounds, is under 0.4 MiB in UTF-8.
BUFFERED_BODY_MB = 1
FOLDER = "front"
ERROR_PATH = "/.sivr-front-error/"  # internal locations only: a client asking for one gets a 404
# The statuses nginx may answer by itself, and the status the client then gets.
OWN_ERRORS = {400: 400, 404: 404, 405: 405, 408: 408, 413: 413, 414: 414, 494: 431, 495: 400, 496: 400, 497: 400,
              500: 500, 501: 501, 502: 502, 503: 503, 504: 504, 505: 505}
REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Payload Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout", 505: "HTTP Version Not Supported"}
DETAILS = {400: "a malformed request, or plain HTTP sent to this HTTPS port",
           408: "the request did not arrive in time"}


class FrontMissing(RuntimeError):
    """nginx is not installed: a deployment with a front cannot start."""


@dataclass(frozen=True)
class Front:
    """One instance's front: where browsers reach it and where its backend listens."""

    name: str
    listen_host: str
    listen_port: int
    backend_port: int
    tls_cert: str  # relative to the front's config folder, or absolute
    tls_key: str
    max_body_mb: int
    keepalive_s: int = 30
    proxy_secret: str = ""  # sent to the backend, which then believes X-Forwarded-For (empty: none sent)
    streamed_locations: tuple[str, ...] = ()  # nginx locations whose bodies are streamed, up to max_body_mb


def nginx_binary() -> str:
    """Debian's nginx (package `nginx`, in installers/dev-common.sh RUNTIME_PACKAGES)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if found is None:
        raise FrontMissing("nginx is not installed: the TLS/HTTP/2 front of every layer needs it "
                           "(apt-get install nginx; installers/quickstart.sh installs it)")
    return found


def config_path(root: Path, name: str) -> Path:
    return root / FOLDER / f"{name}.conf"


def _error_locations() -> str:
    # the headers of every refusal made before the app runs (gunicorn_worker.ERROR_HEADERS), CSP included
    # and HSTS: a front always speaks TLS
    headers = "".join(f"            add_header {name} {_quoted(value)} always;\n"
                      for name, value in (*ERROR_HEADERS[1:], HSTS_HEADER))
    lines = []
    for status in sorted(set(OWN_ERRORS.values())):
        body = json_error_body(status, REASONS[status], DETAILS.get(status, "")).decode()
        lines.append(f"        location = {ERROR_PATH}{status} {{\n"
                     f"            internal;\n"
                     # HTTP/2 checks the body's size again on the redirect; a second 413 there
                     # would send nginx's own HTML page instead of this one
                     f"            client_max_body_size 0;\n"
                     f"            default_type application/json;\n"
                     f"{headers}"
                     f"            return {status} {_quoted(body)};\n"
                     f"        }}")
    return "\n".join(lines)


def bind_host(host: str) -> str:
    """The address a server given `host` binds: `localhost` is loopback, never every interface."""
    return "127.0.0.1" if host == "localhost" else host


def _quoted(text: str) -> str:
    """An nginx single-quoted string ($ would still be expanded as a variable: refused)."""
    if "$" in text:
        raise ValueError(f"nginx would expand the $ in {text!r}")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_config(front: Front) -> str:
    """The whole nginx.conf of one instance's front (run with `-p` a private writable folder)."""
    listen_host = bind_host(front.listen_host)
    try:  # an address: listen on it alone (as gunicorn bound server.host)
        ipaddress.ip_address(listen_host)
        hosts = [f"[{listen_host}]" if ":" in listen_host else listen_host]
    except ValueError:  # a host name: every address of this host (IPv6 sockets are v6-only in nginx)
        hosts = ["0.0.0.0", "[::]"]
    listens = "\n".join(f"        listen {host}:{front.listen_port} ssl http2;" for host in hosts)
    # internal redirects to URIs, not named locations: those need a parsed URI, which a 414 lacks
    error_pages = "\n".join(f"        error_page {own} ={sent} {ERROR_PATH}{sent};" for own, sent in OWN_ERRORS.items())
    buffered_mb = min(front.max_body_mb, BUFFERED_BODY_MB)
    streamed = "".join(f"""        location {location} {{
            client_max_body_size {front.max_body_mb}m;
            proxy_request_buffering off;
            proxy_pass http://backend;
        }}
""" for location in front.streamed_locations)
    secret_header = ""
    if front.proxy_secret:
        secret_header = f"\n        proxy_set_header {PROXY_SECRET_HEADER} {_quoted(front.proxy_secret)};"
    return f"""\
# The TLS/HTTP/2 front of SIVR instance {front.name} (written by daemons/front.py; docs/deployment.md).
# Relative certificate paths are relative to this file's folder; pid and temporary files go under
# the folder nginx is started with (-p), the error log to stderr (-e stderr).
worker_processes 2;
pid nginx.pid;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;  # the app writes the access line, with the route, the user and the request id
    # nginx's lines of level error name the whole request line and upstream URL, query included (a
    # patient search's name and insurance number) at every 502 or 504: not logged. A backend down
    # shows in its unit's state and /readyz, and the client gets the JSON 502 (docs/deployment.md)
    error_log stderr crit;
    server_tokens off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    upstream backend {{
        server {BACKEND_HOST}:{front.backend_port};
        keepalive 64;
        # closed before gunicorn closes an idle one: a streamed POST sent on a connection the
        # backend is closing cannot be retried, and the client would get a 502
        keepalive_timeout {max(1, front.keepalive_s - 5)}s;
    }}

    server {{
{listens}
        ssl_certificate {front.tls_cert};
        ssl_certificate_key {front.tls_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {TLS12_CIPHERS};
        ssl_session_cache shared:sivr_tls:10m;
        keepalive_timeout {front.keepalive_s}s;
        # a body is read whole, in memory, before the backend sees the request (streamed: below); the
        # buffer is a little larger than the largest body, so one over it is refused (413) before
        # the buffer would spill to a file
        client_max_body_size {buffered_mb}m;
        client_body_buffer_size {buffered_mb * 1024 + 64}k;
        large_client_header_buffers 4 16k;

        proxy_http_version 1.1;
        proxy_request_buffering on;
        proxy_buffering off;
        proxy_read_timeout {PROXY_TIMEOUT_S}s;
        proxy_send_timeout {PROXY_TIMEOUT_S}s;
        proxy_set_header Host $host:$server_port;
        proxy_set_header Connection "";
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Forwarded "";{secret_header}

{error_pages}
        location / {{
            proxy_pass http://backend;
        }}
{streamed}{_error_locations()}
    }}
}}
"""


def write_config(root: Path, front: Front) -> Path:
    """Write the front's nginx config, readable by its owner only: it holds the backend's proxy secret."""
    path = config_path(root, front.name)
    make_folder(path.parent, 0o755)
    write_atomic(path, render_config(front).encode(), PRIVATE)
    return path


def command(conf: Path, run_folder: Path) -> list[str]:
    """The nginx command line serving one front in the foreground (systemd, `sivr demo`, tests)."""
    return [nginx_binary(), "-p", f"{run_folder}/", "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]
