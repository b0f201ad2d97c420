"""`sivr`: the one command for everything an operator does.

init (keys, CA, certificates, configs) · db upgrade · institution add · user add · serve a layer
under gunicorn with TLS · ready (is an instance ready to serve) · demo (the whole system on loopback
with demo data) · admin (the console).
"""

from __future__ import annotations

import argparse
import errno
import getpass
import importlib
import math
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import peewee

from daemons.layers import LAYER_NAMES, get_layer
from shared.config import ConfigError
from shared.roles import ROLES, SYSTEM_ADMIN
from shared.tls import TLS12_CIPHERS


def _toplevel_ops():
    return importlib.import_module("daemons.toplevel.admin_ops")


def _object_store(args: argparse.Namespace):
    """`--s3-endpoint`, `--s3-bucket`, `--s3-credentials`: all three or none."""
    from daemons.deployment import ObjectStore
    from daemons.render.store.s3 import load_credentials

    given = [args.s3_endpoint, args.s3_bucket, args.s3_credentials]
    if not any(given):
        return None
    if not all(given):
        raise SystemExit("--s3-endpoint, --s3-bucket and --s3-credentials go together")
    path = Path(args.s3_credentials)
    try:  # the rule of every secret a node loads: only its owner may read it
        access_key_id, secret_access_key = load_credentials(path)
    except OSError as exc:
        raise ConfigError(f"--s3-credentials {path}: cannot read it ({exc.strerror or exc})") from exc
    return ObjectStore(args.s3_endpoint, args.s3_bucket, access_key_id, secret_access_key, ca_file=args.s3_ca or "")


def cmd_init(args: argparse.Namespace) -> int:
    from daemons.deployment import init_deployment

    object_store = _object_store(args)
    root = Path(args.dir).resolve()
    existed, found_empty = root.exists(), _absent_or_empty(root)
    try:
        layout = init_deployment(
            root,
            hostnames=args.hostname or None,
            institution_names=args.institution_name or None,
            nodes_per_institution=args.nodes_per_institution,
            render_workers=args.render_workers,
            force=args.force,
            object_store=object_store,
            front=args.front,
        )
        register_institutions(layout)
    except BaseException as exc:
        # A disk filling up, a folder not ours, Ctrl-C: what was written is half a deployment whose
        # store key and database a re-run refuses to overwrite ("holds data"), even with --force.
        if not found_empty:
            raise
        _take_back(root, existed)
        if not isinstance(exc, OSError | peewee.DatabaseError | sqlite3.Error):
            raise
        print(f"sivr: init failed: {failure_text(exc)}; {root} is left as it was: run the same "
              "`sivr init` again once that is fixed", file=sys.stderr)
        return 2
    print(f"Deployment written to {layout.root}:")
    for instance in layout.instances:
        print(f"  {instance.name:<16} {instance.url:<28} {instance.config}")
    print(f"  CA certificate: {layout.ca_cert} (give it to browsers and the console)")
    print("Next: sivr user add --config", Path(layout.root, "toplevel.toml"), f"--username admin --role {SYSTEM_ADMIN}")
    return 0


def _absent_or_empty(root: Path) -> bool:
    """Whether `root` holds nothing init could lose: then a failed init may take back all it wrote."""
    try:
        return not any(root.iterdir())
    except FileNotFoundError:
        return True
    except OSError:  # not a folder, or not ours to list: init fails on it before writing anything
        return False


def _take_back(root: Path, existed: bool) -> None:
    """Leave `root`, absent or empty before init, as it was: everything in it is init's."""
    if not root.is_dir():
        return
    if not existed:
        shutil.rmtree(root, ignore_errors=True)
        return
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def failure_text(exc: BaseException) -> str:
    """One line for a file or database failure, saying what to do about the usual causes.

    The first database error of the chain is the one named: after SQLite's "database or disk is
    full", peewee's ROLLBACK failed too and its "cannot rollback" was all a traceback ended on."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, peewee.DatabaseError | sqlite3.Error):
            exc = cause
        cause = cause.__context__
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror or exc}"
        number = exc.errno
    else:
        text = f"database error: {exc}"
        lowered = str(exc).lower()
        number = (errno.ENOSPC if "full" in lowered or "disk i/o" in lowered
                  else errno.EACCES if "readonly" in lowered or "unable to open" in lowered else None)
    if number in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"{text} (free space on that disk, or raise the file size or quota limit, and run it again)"
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{text} (run it as the user that owns the deployment's files, e.g. "
                "`runuser -u sivr -- sivr ...`, on a writable file system)")
    return text


def register_institutions(layout) -> None:
    """Create the layout's institutions in the toplevel database (idempotent)."""
    toplevel = layout.first("toplevel")
    if toplevel is None:
        return
    layer = get_layer("toplevel")
    config = layer.load_config(toplevel.config)
    layer.upgrade_schema(config)
    for inst in layout.institutions:
        _toplevel_ops().create_institution(
            config, inst["name"], server_url=inst["server_url"], institution_id=inst["id"]
        )


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    layer = get_layer(args.layer)
    version = layer.upgrade_schema(layer.load_config(args.config))
    print(f"{args.layer}: schema at version {version}" if version else f"{args.layer}: no database")
    return 0


#: The layers whose database may be a server's (`sivr db copy`): a render node keeps SQLite.
COPIED_LAYERS = ("toplevel", "institution")


def cmd_db_copy(args: argparse.Namespace) -> int:
    """Move a server from one database to another (SQLite to PostgreSQL) with its rows."""
    from shared.db import redacted_url

    layer = get_layer(args.layer)
    copied = layer.copy_database(layer.load_config(args.config), args.to)
    tables = ", ".join(f"{table} {count}" for table, count in copied.items())
    print(f"{args.layer}: {sum(copied.values())} rows copied ({tables}) into {redacted_url(args.to)}; set "
          f"database.url in {args.config} to the --to URL, then start the server (the old database is left "
          "as it was)")
    return 0


def cmd_store_rewrap(args: argparse.Namespace) -> int:
    """After a KEK rotation: rewrap every record's data key under storage.key_file (objects untouched)."""
    from daemons.render.store.interface import StoreUnavailable, open_store
    from daemons.render.store.local import StoreError

    config = get_layer("render").load_config(args.config)
    try:
        rewrapped = open_store(config, create_key=False).rewrap()
    except (StoreUnavailable, StoreError, OSError, ConfigError) as exc:
        # the store unreachable or refusing us, a record no key opens, a key file missing or a folder
        print(f"sivr: {args.config}: cannot rewrap the store: {exc}", file=sys.stderr)
        return 2
    if rewrapped is None:
        print("nothing to rewrap: a local store (storage.backend = \"local\") has one key, storage.key_file, "
              "and no wrapped data keys; key rotation with storage.old_key_files is for s3 stores")
        return 0
    print(f"{rewrapped} record(s) rewrapped with the current key-encryption key; "
          "every record now opens without storage.old_key_files")
    return 0


def cmd_institution_add(args: argparse.Namespace) -> int:
    config = get_layer("toplevel").load_config(args.config)
    get_layer("toplevel").upgrade_schema(config)
    from shared.errors import ApiError

    try:
        inst = _toplevel_ops().create_institution(
            config, args.name, address=args.address, server_url=args.server_url, institution_id=args.id
        )
    except (ValueError, ApiError) as exc:
        raise SystemExit(f"sivr: cannot add the institution: {exc}") from exc
    print(f"institution {inst['name']}: {inst['id']}")
    return 0


def password_line(line: str) -> str:
    """The password on one line read from standard input, without its line ending (CR LF or LF).

    Only the ending goes: a password file written on Windows ended in CR LF, and the CR stayed
    in the stored password, which nobody can type at the login form; spaces are kept, as part of it
    (`daemons.toplevel.passwords.password_field` never strips either)."""
    return line.removesuffix("\n").removesuffix("\r") if line.endswith("\n") else line


def _read_password(args: argparse.Namespace) -> str:
    """The new user's password: a line of standard input with --password-stdin, else asked twice
    at the terminal. A terminal's line is read without echo (`getpass`): `--password-stdin` with
    nothing piped in showed the password as it was typed, on the screen and in its scroll-back."""
    if args.password_stdin:
        if sys.stdin.isatty():
            return getpass.getpass("Password: ")
        return password_line(sys.stdin.readline())
    if not sys.stdin.isatty():
        raise SystemExit("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise SystemExit("the passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    config = get_layer("toplevel").load_config(args.config)
    get_layer("toplevel").upgrade_schema(config)
    ops = _toplevel_ops()
    institution_id = args.institution
    institutions = ops.list_institutions(config)
    if institution_id is None:
        if len(institutions) != 1:
            names = ", ".join(f"{i['name']} ({i['id']})" for i in institutions) or "none"
            raise SystemExit(f"choose the user's institution with --institution; there are: {names}")
        institution_id = institutions[0]["id"]
    else:
        matches = [i for i in institutions if institution_id in (i["id"], i["name"])]
        if not matches:
            raise SystemExit(f"no institution with id or name {institution_id!r}")
        institution_id = matches[0]["id"]
    try:
        user = ops.create_user(
            config, args.username, _read_password(args), args.role, institution_id, args.full_name
        )
    except ValueError as exc:
        raise SystemExit(f"cannot add the user: {exc}") from exc
    print(f"user {user['username']} ({user['role']}) created: {user['id']}")
    return 0


def cmd_user_set_role(args: argparse.Namespace) -> int:
    config = get_layer("toplevel").load_config(args.config)
    get_layer("toplevel").upgrade_schema(config)
    try:
        user = _toplevel_ops().set_role(config, args.username, args.role)
    except ValueError as exc:
        raise SystemExit(f"cannot change the role: {exc}") from exc
    print(f"user {user['username']} is now {user['role']}")
    return 0


# The folder holding SIVR's top-level packages (daemons, shared, ...): site-packages, or the
# source tree of an editable install.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def gunicorn_argv(layer_name: str, config, listen_fd: int | None = None) -> list[str]:
    """The gunicorn command line serving one layer as its config says.

    `listen_fd`: an inherited socket, already bound to the config's address, to serve on instead
    of binding it again (how `sivr demo` and the tests start layers without a port race).

    Nothing depends on the folder the daemon is started from: `-P` keeps Python from putting it
    first on the import path, and gunicorn, which inserts its starting folder there too (before
    it reads --chdir), is started in PACKAGE_ROOT by cmd_serve. A folder named `shared` where an
    operator happens to stand would otherwise shadow SIVR's own `shared` package.
    """
    from daemons.gunicorn_worker import LIMIT_REQUEST_FIELD_SIZE, LIMIT_REQUEST_FIELDS, LIMIT_REQUEST_LINE

    server = config["server"]
    workers = server["workers"]
    if listen_fd is not None:
        bind = f"fd://{listen_fd}"
    elif ":" in server["host"]:
        bind = f"[{server['host']}]:{server['port']}"
    else:
        bind = f"{server['host']}:{server['port']}"
    argv = [
        sys.executable, "-P", "-m", "gunicorn",
        "--chdir", str(PACKAGE_ROOT),
        "--bind", bind,
        "--workers", str(workers),
        "--worker-class", "daemons.gunicorn_worker.ThreadWorker",
        "--threads", str(server["threads"]),
        "--timeout", str(server["timeout_s"]),
        "--keep-alive", str(server["keepalive_s"]),
        "--limit-request-line", str(LIMIT_REQUEST_LINE),
        "--limit-request-fields", str(LIMIT_REQUEST_FIELDS),
        "--limit-request-field_size", str(LIMIT_REQUEST_FIELD_SIZE),
        "--graceful-timeout", "10",
        "--config", "python:daemons.gunicorn_conf",  # JSON error log; the app writes the access lines
        "--error-logfile", "-",
        "--log-level", config["log"]["level"],
        "--name", f"sivr-{layer_name}",
        # gunicorn's control socket sits at one path in the user's home, shared by every instance the
        # service user runs (two render nodes on a host would take each other's), and SIVR uses none
        "--no-control-socket",
    ]
    if server["tls_cert"]:
        argv += ["--certfile", server["tls_cert"], "--keyfile", server["tls_key"], "--ciphers", TLS12_CIPHERS]
    argv.append(f"daemons.wsgi:build({layer_name!r}, {str(config.source)!r})")
    return argv


def check_served_files(config) -> None:
    """Read what a server would read only later, before it listens: the TLS certificate and key
    (gunicorn loads them at the first connection: a garbage key served "Listening at
    https://..." with every handshake failing, unlogged), the front's secret (read by the worker
    gunicorn forks), a render node's DICOM TLS settings, the toplevel's argon2 settings and its
    signing key (each secret readable by its owner only). A ConfigError names the config and key."""
    from shared.tls import load_credentials
    from shared.webapp import read_proxy_secret

    server = config["server"]
    if server["tls_cert"] or server["tls_key"]:
        load_credentials(config.source, ("server.tls_cert", server["tls_cert"]), ("server.tls_key", server["tls_key"]))
    if server["proxy_secret_file"]:
        read_proxy_secret(config)
    if config.layer == "render":
        from daemons.render.dimse.listener import check_config as check_dicom_config

        check_dicom_config(config)
    if config.layer == "toplevel":
        from daemons.toplevel.app import signing_key_from_config
        from daemons.toplevel.passwords import check_argon2

        check_argon2(config)
        try:
            signing_key_from_config(config)
        except ConfigError:
            raise
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{config.source}: tokens.private_key {config['tokens']['private_key']} is "
                              f"unusable: {getattr(exc, 'strerror', None) or exc}") from exc


def cmd_serve(args: argparse.Namespace) -> int:
    layer = get_layer(args.layer)
    config = layer.load_config(args.config)
    check_served_files(config)
    if args.layer in COPIED_LAYERS:
        from shared.db_copy import hold_while_serving

        # kept open through exec by gunicorn and its workers: `sivr db copy` refuses while they run;
        # taken before the schema upgrade, which must not change a database being copied
        hold_while_serving(config)
    layer.upgrade_schema(config)
    if args.dicom_fd is not None:
        from daemons.render.dimse.listener import DICOM_FD_ENV, inherited_socket_problem

        if args.layer != "render":
            print(f"sivr: --dicom-fd is for render nodes, not the {args.layer} layer", file=sys.stderr)
            return 2
        problem = inherited_socket_problem(args.dicom_fd, config["dicom"]["port"])
        if problem:
            print(f"sivr: --dicom-fd {args.dicom_fd}: {problem}", file=sys.stderr)
            return 2
        os.environ[DICOM_FD_ENV] = str(args.dicom_fd)  # read by the listener in the worker gunicorn forks
    if args.layer == "render":
        # Compile the kernels into numba's disk cache now: gunicorn reports READY to systemd once
        # it listens, before its worker loads the app, which then only loads them from the cache.
        from daemons.render.warm import warm_up_kernels

        print(f"sivr: {warm_up_kernels().summary()}", flush=True)
        if config["render"]["backend_3d"] != "cpu":
            from daemons.render.volume.backend import share_probe_with_workers

            share_probe_with_workers()  # once per start, not once per worker
    argv = gunicorn_argv(args.layer, config, args.listen_fd)
    if config["server"]["workers"] > 1:
        # every worker counts requests: prometheus_client adds up their files in this folder (docs/operations.md)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix=f"sivr-{args.layer}-metrics-", dir=os.environ.get("XDG_RUNTIME_DIR"))
    if args.layer == "render":
        from daemons.render.runtime import RUNTIME_ENV, make_runtime_folder

        # the decoded series and locks the node's workers share; removed when gunicorn exits
        os.environ[RUNTIME_ENV] = make_runtime_folder("sivr-render-")
        # Beside the shared series, each worker's threads allocate and free decode and encode
        # buffers; glibc keeps what they free in an arena per thread (up to 8 per core). Two arenas
        # per process: after serving, a node held 1.35-1.47x a series' size instead of 1.19-1.25x,
        # for the same images per second (docs/operations.md, "Workers of a render node").
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    sys.stdout.flush()
    os.chdir(PACKAGE_ROOT)  # every path in the config is absolute by now
    os.environ["PWD"] = str(PACKAGE_ROOT)  # gunicorn takes its starting folder from $PWD
    os.execv(argv[0], argv)
    return 0  # not reached: exec replaces this process


def cmd_ready(args: argparse.Namespace) -> int:
    from daemons.readiness import wait_ready

    ready, message = wait_ready(get_layer(args.layer).load_config(args.config), args.wait)
    print(f"{args.layer}: {message}", file=sys.stdout if ready else sys.stderr)
    return 0 if ready else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from daemons.demo import run_demo

    return run_demo(Path(args.state_dir), fresh=args.fresh, with_data=not args.no_data)


def cmd_cert_issue(args: argparse.Namespace) -> int:
    from shared.tls import check_hostname, issue_server_cert, load_ca

    ca_dir, out = Path(args.ca_dir), Path(args.out)
    for host in args.hostname:  # everything checked before --out is made
        check_hostname(host)
    load_ca(ca_dir / "ca.pem", ca_dir / "ca.key")
    out.mkdir(parents=True, exist_ok=True)
    issue_server_cert(ca_dir / "ca.pem", ca_dir / "ca.key", out / "server.pem", out / "server.key",
                      args.hostname)
    print(f"certificate for {', '.join(args.hostname)}: {out / 'server.pem'} (key {out / 'server.key'})")
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    try:
        from admin_gui.main import main as admin_main
    except ImportError as exc:
        raise SystemExit(f"the console needs Qt: pip install 'sivr[console]' ({exc})") from exc
    forwarded = [*(["--url", args.url] if args.url else []), *(["--ca", args.ca] if args.ca else [])]
    return admin_main([*forwarded, *args.extra])


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def _seconds(value: str) -> float:
    """A finite, non-negative number of seconds: `--wait nan` or `inf` asked forever."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number of seconds of at least 0")
    return number


class _Parser(argparse.ArgumentParser):
    """argparse, whose refusals repeat no value given with `=` to an option that takes none:
    `--password-stdin=S3cret` was answered "ignored explicit argument 'S3cret'", the password in
    every log that keeps the command's output (the subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        super().error(re.sub(r"ignored explicit argument '.*'", "ignored explicit argument (not repeated here)",
                             message, flags=re.DOTALL))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sivr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write keys, a local CA, certificates and config files")
    p.add_argument("--dir", required=True, help="folder to write the deployment to")
    p.add_argument("--hostname", action="append",
                   help="host name or address the servers are reached at (repeatable; first is used in URLs)")
    p.add_argument("--institution-name", action="append", help="an institution to set up (repeatable)")
    p.add_argument("--nodes-per-institution", type=int, default=1)
    p.add_argument("--render-workers", type=_at_least_one, metavar="N",
                   help="gunicorn workers per render node (default: one per core, at most 8)")
    p.add_argument("--force", action="store_true",
                   help="rewrite a deployment folder that holds no data yet (keys, CA, configs); "
                        "refused while data/ or a store key is there (docs/deployment.md)")
    p.add_argument("--front", action=argparse.BooleanOptionalAction, default=True,
                   help="serve each instance through its own nginx (TLS, HTTP/2; configs in front/), gunicorn "
                        "behind it on loopback (the default); --no-front: gunicorn serves TLS itself, only "
                        "behind a buffering proxy of your own (docs/deployment.md, \"Slow clients\")")
    p.add_argument("--s3-endpoint", help="render stores in an S3 bucket at this endpoint (one prefix per institution)")
    p.add_argument("--s3-bucket", help="the bucket the render nodes share")
    p.add_argument("--s3-credentials",
                   help='JSON file {"access_key_id", "secret_access_key"} of the S3 user, readable by its owner only')
    p.add_argument("--s3-ca", help="CA bundle (PEM) of the object store's certificate")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("db", help="database schema")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    p = dbsub.add_parser("upgrade", help="create or upgrade a layer's schema")
    p.add_argument("layer", choices=LAYER_NAMES)
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_db_upgrade)
    p = dbsub.add_parser("copy", help="copy a stopped server's rows into an empty database (SQLite to PostgreSQL)")
    p.add_argument("layer", choices=COPIED_LAYERS)
    p.add_argument("--config", required=True, help="the server's config, naming the database copied from")
    p.add_argument("--to", required=True,
                   help="the empty database's URL, as database.url takes it (password in a passfile, not the URL)")
    p.set_defaults(func=cmd_db_copy)

    p = sub.add_parser("store", help="a render node's record store")
    ssub = p.add_subparsers(dest="store_command", required=True)
    p = ssub.add_parser("rewrap", help="rewrap every record's data key with the current key (after a rotation)")
    p.add_argument("--config", required=True, help="the render node's config file")
    p.set_defaults(func=cmd_store_rewrap)

    p = sub.add_parser("institution", help="institutions in the toplevel database")
    isub = p.add_subparsers(dest="institution_command", required=True)
    p = isub.add_parser("add", help="add an institution")
    p.add_argument("--config", required=True, help="the toplevel's config file")
    p.add_argument("--name", required=True)
    p.add_argument("--address", default="")
    p.add_argument("--server-url", default="", help="URL of the institution's server")
    p.add_argument("--id", help="use this UUID (the one `sivr init` wrote into the institution's config)")
    p.set_defaults(func=cmd_institution_add)

    p = sub.add_parser("cert", help="certificates from the local CA")
    csub = p.add_subparsers(dest="cert_command", required=True)
    p = csub.add_parser("issue", help="issue a server certificate for another host")
    p.add_argument("--ca-dir", required=True, help="folder holding ca.pem and ca.key (e.g. DIR/tls)")
    p.add_argument("--hostname", action="append", required=True,
                   help="DNS name or address of the host (repeatable; the first is the subject)")
    p.add_argument("--out", required=True, help="folder to write server.pem and server.key (0600) to")
    p.set_defaults(func=cmd_cert_issue)

    p = sub.add_parser("user", help="users in the toplevel database")
    usub = p.add_subparsers(dest="user_command", required=True)
    # no abbreviations: `--pass=S3cret` was taken for --password-stdin, and argparse's refusal
    # ("ignored explicit argument 'S3cret'") printed the password
    p = usub.add_parser("add", help="add a user (e.g. the first admin)", allow_abbrev=False)
    p.add_argument("--config", required=True, help="the toplevel's config file")
    p.add_argument("--username", required=True)
    p.add_argument("--role", choices=ROLES, required=True,
                   help=f"{SYSTEM_ADMIN}: everything; instadmin: users and nodes of its institution")
    p.add_argument("--institution", help="institution id or name (default: the only one)")
    p.add_argument("--full-name", default="")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_user_add)
    p = usub.add_parser("set-role", help="change a user's role (e.g. demote a migrated admin to instadmin)")
    p.add_argument("--config", required=True, help="the toplevel's config file")
    p.add_argument("username")
    p.add_argument("role", choices=ROLES)
    p.set_defaults(func=cmd_user_set_role)

    p = sub.add_parser("serve", help="serve one layer under gunicorn with TLS")
    p.add_argument("layer", choices=LAYER_NAMES)
    p.add_argument("--config", required=True)
    p.add_argument("--listen-fd", type=int, metavar="FD",
                   help="serve on this inherited socket, already bound to the config's address")
    p.add_argument("--dicom-fd", type=int, metavar="FD",
                   help="render nodes: serve DICOM on this inherited socket, already bound to dicom.port")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ready", help="ask a running instance's /readyz (exit 0 when ready; the units use it)")
    p.add_argument("layer", choices=LAYER_NAMES)
    p.add_argument("--config", required=True)
    p.add_argument("--wait", type=_seconds, default=0, help="keep asking for up to this many seconds")
    p.set_defaults(func=cmd_ready)

    p = sub.add_parser("demo", help="run the whole system on loopback with demo data")
    p.add_argument("--state-dir", default=".sivr-demo")
    p.add_argument("--fresh", action="store_true",
                   help="discard an earlier demo's state first (only what a demo writes: a folder holding "
                        "anything else is refused)")
    p.add_argument("--no-data", action="store_true", help="skip uploading the demo CT series")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("admin", help="open the administrators' console")
    p.add_argument("--url", help="toplevel server URL to prefill")
    p.add_argument("--ca", help="CA certificate file of the servers")
    p.set_defaults(func=cmd_admin)
    return parser


def unrecognized(extra: list[str]) -> str:
    """The refusal of arguments `sivr` does not take, naming their options but no value.

    `sivr user add ... --password S3cret` printed "unrecognized arguments: S3cret": a password
    typed where none is taken went on into every log that keeps the command's output. A short
    option's value may follow it in the same word (`-pS3cret`, as `mysql -p` takes it): only the
    option's two characters are named."""
    options = [_option_of(word) for word in extra if word.startswith("-")]
    values = sum(1 for word in extra if _option_of(word) != word)
    named = " ".join(options) or "(none)"
    unnamed = f" and {values} value{'s' if values != 1 else ''}, not repeated here" if values else ""
    return (f"unrecognized arguments: {named}{unnamed}; a user's password is typed at the prompt "
            "or given with --password-stdin, never on the command line")


def _option_of(word: str) -> str:
    """The option an argument names (`--name` of `--name=value`, `-p` of `-pvalue`); "" for a word
    that is no option (a value)."""
    if not word.startswith("-"):
        return ""
    if word.startswith("--"):
        return word.partition("=")[0]
    return word[:2]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.func is not cmd_admin:
        parser.error(unrecognized(extra))
    args.extra = extra  # the console passes what it does not know on to Qt
    try:
        return args.func(args)
    except (ConfigError, FileExistsError, ValueError) as exc:
        print(f"sivr: {exc}", file=sys.stderr)
        return 2
    except (OSError, peewee.DatabaseError, sqlite3.Error) as exc:  # a disk full, a file not ours
        print(f"sivr: {failure_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sivr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
