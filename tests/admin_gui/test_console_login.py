"""Login screen against the real toplevel: bad input, wrong password, unreachable server,
untrusted certificate, physicians refused, and what is remembered for the next start."""

from __future__ import annotations

import pytest
from conftest import screenshot
from driving import log_in, log_in_admin, wait_idle
from PySide6.QtCore import QSettings, Qt

from admin_gui.api_client import SessionEnded
from admin_gui.main_window import ConsoleWindow
from daemons.deployment import free_port
from shared.tls import create_ca

pytestmark = pytest.mark.gui


def click_sign_in(qtbot, window) -> None:
    qtbot.mouseClick(window.login.button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)


def test_bad_input_is_refused_before_any_call(qtbot, window, tmp_path):
    page = window.login
    page.url.setText("http://127.0.0.1:5001")
    page.username.setText("admin")
    page.password.setText("secret-password")
    click_sign_in(qtbot, window)
    assert "must start with https://" in page.banner.text()

    page.url.setText("https://127.0.0.1:5001")
    page.ca_file.setText(str(tmp_path / "missing.pem"))
    click_sign_in(qtbot, window)
    assert "does not exist" in page.banner.text()

    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    page.ca_file.setText(str(not_pem))
    click_sign_in(qtbot, window)
    assert "not a PEM certificate" in page.banner.text()

    page.ca_file.setText("")
    page.password.setText("")
    click_sign_in(qtbot, window)
    assert page.banner.text() == "Password is required."
    assert window.console is None
    assert page.button.isEnabled()
    screenshot(window, "login-error")


def test_wrong_password_says_so(qtbot, window, gui_deployment):
    log_in(qtbot, window, gui_deployment, "admin", "not-the-password")
    assert window.console is None
    assert window.login.banner.text() == "Wrong username or password"
    assert window.login.button.isEnabled()


def test_unreachable_server_says_so(qtbot, window, gui_deployment):
    port = free_port()
    page = window.login
    page.url.setText(f"https://127.0.0.1:{port}")
    page.ca_file.setText(gui_deployment.ca_cert)
    page.username.setText("admin")
    page.password.setText("whatever-password")
    click_sign_in(qtbot, window)
    assert page.banner.text() == (f"Cannot reach 127.0.0.1:{port}: check the address and that "
                                  f"the server is running.")


def test_certificate_from_another_ca_is_refused(qtbot, window, gui_deployment, tmp_path):
    create_ca(tmp_path / "other-ca.pem", tmp_path / "other-ca.key")
    page = window.login
    page.url.setText(gui_deployment.url("toplevel"))
    page.ca_file.setText(str(tmp_path / "other-ca.pem"))
    page.username.setText("admin")
    page.password.setText(gui_deployment.users["admin"]["password"])
    click_sign_in(qtbot, window)
    assert "TLS certificate" in page.banner.text()
    assert window.console is None


def test_physicians_are_sent_to_the_web_viewer(qtbot, window, gui_deployment):
    log_in(qtbot, window, gui_deployment, **gui_deployment.users["physician"])
    assert window.console is None
    assert "this console is for administrators" in window.login.banner.text()
    assert "is a physician;" in window.login.banner.text()  # the role's word, not its code


def test_login_shows_console_and_remembers_all_but_the_password(qtbot, window, gui_deployment, tmp_path):
    log_in_admin(qtbot, window, gui_deployment)
    assert window.pages.currentWidget() is window.console
    assert "Demo Administrator (admin)" in window.user_label.text()
    assert window.server_label.text() == gui_deployment.url("toplevel")
    assert window.login.password.text() == ""

    password = gui_deployment.users["admin"]["password"]
    settings_file = tmp_path / "console.ini"
    assert password not in settings_file.read_text()
    again = ConsoleWindow(QSettings(str(settings_file), QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    assert again.login.url.text() == gui_deployment.url("toplevel")
    assert again.login.ca_file.text() == gui_deployment.ca_cert
    assert again.login.username.text() == "admin"
    assert again.login.password.text() == ""


def test_sign_out_returns_to_login_and_ends_the_session(qtbot, window, gui_deployment):
    log_in_admin(qtbot, window, gui_deployment)
    client = window.client
    token = client.credentials.access_token
    qtbot.mouseClick(window.console.logout_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    assert window.console is None
    assert window.pages.currentWidget() is window.login
    assert window.user_label.text() == "Not signed in"
    client.credentials.access_token = token
    with pytest.raises(SessionEnded):
        client.renew()


def test_too_many_wrong_passwords_say_when_to_try_again(qtbot, window, private_deployment):
    deployment = private_deployment(nodes=False)
    for _ in range(5):
        log_in(qtbot, window, deployment, "admin", "wrong-password-1")
        assert window.login.banner.text() == "Wrong username or password"
    log_in(qtbot, window, deployment, **deployment.users["admin"])
    assert window.console is None
    message = window.login.banner.text()
    assert message.startswith("Too many failed logins")
    assert message.count("try again in") == 1
