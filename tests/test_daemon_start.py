"""Starting daemons does not depend on where or when: the working folder, ports taken meanwhile."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest
import requests

from daemons import deployment
from daemons.deployment import (
    CHOSEN_PORTS_FROM,
    LocalDeployment,
    dicom_endpoint,
    free_port,
    free_ports,
    hold_free_port,
    init_deployment,
    listening_socket,
)
from daemons.render.dimse.listener import inherited_socket_problem
from tests.render.dimse_peers import echo


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("stray", ["empty folder", "package"])
def test_a_layer_started_beside_a_folder_named_shared_serves(tmp_path, monkeypatch, stray):
    """gunicorn and `python -m` put the working folder first on the import path; SIVR's own
    top-level package is also called `shared`. Started from a folder holding a `shared`, every
    worker died with "cannot import name '__version__' from 'shared'"."""
    here = tmp_path / "operator's folder"
    (here / "shared").mkdir(parents=True)
    if stray == "package":
        (here / "shared" / "__init__.py").write_text("raise ImportError('the wrong shared package')\n")
    monkeypatch.chdir(here)
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True, hold_ports=True)
    with LocalDeployment(layout, layers=("toplevel", "web")) as deployment:
        for layer in ("toplevel", "web"):
            reply = requests.get(f"{deployment.url(layer)}/healthz", verify=deployment.ca_cert, timeout=10)
            assert reply.status_code == 200, reply.text


def test_ports_chosen_for_a_deployment_cannot_be_taken_before_it_starts(tmp_path):
    """`sivr demo` chose free ports, then gunicorn bound them later: another program (another
    demo) taking one in between failed the start with "Connection in use"."""
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True, hold_ports=True)
    port = _port(layout.first("web").url)
    with socket.socket() as intruder:  # as a server binds: gunicorn sets SO_REUSEADDR too
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            intruder.bind(("127.0.0.1", port))
            intruder.listen()
        with LocalDeployment(layout, layers=("web",)) as deployment:
            assert requests.get(f"{deployment.url('web')}/healthz", verify=deployment.ca_cert, timeout=10).ok


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_render_nodes_dicom_port_is_held_until_it_serves_and_survives_a_worker_restart(tmp_path):
    """The DICOM port was chosen free and bound by the node's worker seconds later: in CI another
    test's process took it in between, and the node died at start with "Address already in use".
    Now it is held from the choice and handed to the node (`sivr serve --dicom-fd`)."""
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True, hold_ports=True)
    endpoint = dicom_endpoint(layout.first("render"))
    port, title = int(endpoint["port"]), endpoint["ae_title"]
    with socket.socket() as intruder:  # as pynetdicom binds: SO_REUSEADDR
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            intruder.bind(("127.0.0.1", port))
    with LocalDeployment(layout, layers=("render",)) as deployment:
        assert echo(port, called=title)
        master = deployment.processes["render-1-1"].pid
        for worker in _children(master):  # one of them serves DICOM
            os.kill(worker, signal.SIGKILL)  # gunicorn starts another worker, which serves the same socket
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                workers = _children(master)
                if workers and worker not in workers and echo(port, called=title):
                    break
                time.sleep(0.3)
            assert echo(port, called=title), f"a restarted worker serves DICOM again after {worker} died"
        # the node closed those associations' connections (TIME_WAIT on its side): a restart binds anew
        instance = layout.first("render")
        deployment.stop_instance(instance.name)
        deployment.start_instance(instance)
        deployment.wait_healthy(instance)
        assert echo(port, called=title), "a restarted node serves DICOM again"


def test_a_dicom_fd_that_cannot_serve_the_port_is_refused_before_the_start(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert inherited_socket_problem(sock.fileno(), port) is None
        assert inherited_socket_problem(sock.fileno(), port + 1) == f"bound to port {port}, not dicom.port {port + 1}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert inherited_socket_problem(udp.fileno(), 11112) == "not a TCP socket"
    with open(tmp_path / "file", "w") as handle:
        assert inherited_socket_problem(handle.fileno(), 11112).startswith("not a socket")
    assert inherited_socket_problem(10**6, 11112).startswith("no such open descriptor")


def test_a_port_taken_before_the_start_is_named_before_any_daemon_starts(tmp_path):
    """Ports of an earlier layout (a demo state folder reused) are not held: a taken one is reported."""
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True)
    port = _port(layout.first("web").url)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        deployment = LocalDeployment(layout, layers=("web",))
        with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port}"):
            deployment.start()
        assert not deployment.processes


def test_instances_leave_no_shared_gunicorn_control_socket(tmp_path, monkeypatch):
    """gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl by default: every instance of
    the service user would bind the same path, each start taking it from the one before."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    layout = init_deployment(tmp_path / "deploy", pick_free_ports=True, hold_ports=True)
    with LocalDeployment(layout, layers=("toplevel", "web")) as deployment:
        for layer in ("toplevel", "web"):
            assert requests.get(f"{deployment.url(layer)}/healthz", verify=deployment.ca_cert, timeout=10).ok
        assert not (home / ".gunicorn").exists()


def test_ports_chosen_together_all_differ_and_no_connection_takes_them():
    """Ports chosen one after another may repeat (the kernel can hand out the port just released):
    a node got the same free port for dicom.port and dicom.tls_port and refused to start. And a
    port the kernel chose (port 0) could go to any outgoing connection before its server bound it:
    they are chosen below the kernel's own range instead."""
    ports = free_ports(64)
    assert len(set(ports)) == 64
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    held = hold_free_port()
    listening_socket("127.0.0.1", held).close()  # handed over (as to a daemon) and closed
    if low > CHOSEN_PORTS_FROM:
        assert all(CHOSEN_PORTS_FROM <= port < low for port in [*ports, held])


def test_a_port_chosen_and_released_is_never_chosen_again_by_the_process(monkeypatch):
    """CI: a test chose the ports of its two C-MOVE destinations, released them, then started a
    node whose DICOM listener got one of them as its own free port; the destination's storescp
    could not bind it, and the C-MOVE reached the node itself ("called AE title not recognised")."""

    class Repeating(random.Random):
        """Draws the given ports first, as two random choices can fall on one port, then at random."""

        def __init__(self, draws: list[int]) -> None:
            super().__init__()
            self.draws = iter(draws)

        def choice(self, seq):
            return next(self.draws, None) or super().choice(seq)

    first, second = free_ports(2)
    monkeypatch.setattr(deployment, "_random", Repeating([first, second, first, second]))
    again = free_port()
    assert again not in (first, second)
