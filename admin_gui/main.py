"""Entry point of the console: `sivr admin` calls `main()`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from admin_gui.form_checks import check_server_url
from admin_gui.gc_on_gui_thread import GuiThreadCollector
from admin_gui.main_window import ConsoleWindow
from admin_gui.screens.login import KEY_CA, KEY_URL
from admin_gui.style import apply_style

ORGANIZATION = "SIVR"
APPLICATION = "sivr-admin"
ICON = Path(__file__).with_name("resources") / "sivr-admin.svg"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the rest for Qt (e.g. `-platform offscreen`)."""
    parser = argparse.ArgumentParser(prog="sivr admin", description="SIVR administrators' console")
    parser.add_argument("--url", help="toplevel server URL to prefill (e.g. https://127.0.0.1:5001)")
    parser.add_argument("--ca", help="CA certificate file that signed the servers' certificates")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the console; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `sivr admin -- --url …`: argparse's REMAINDER keeps the separator
        argv = argv[1:]
    args, qt_args = parse_args(argv)
    # checked before it is remembered: `--url https://root:secret@host` was written to the settings
    # file as given, password and all, and an http:// one only refused at the first login
    problem = check_server_url(args.url, "--url") if args.url else None
    if problem:
        print(f"sivr admin: {problem}", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "sivr-admin", *qt_args])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("SIVR Administration")
    app.setDesktopFileName(APPLICATION)
    app.setWindowIcon(QIcon(str(ICON)))
    apply_style(app)
    settings = QSettings(ORGANIZATION, APPLICATION)
    if args.url:
        settings.setValue(KEY_URL, args.url)
    if args.ca:
        settings.setValue(KEY_CA, str(Path(args.ca).resolve()))
    collector = GuiThreadCollector(app)
    window = ConsoleWindow(settings)
    window.show()
    status = app.exec()
    window.runner.wait_for_done(5000)
    collector.stop()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
