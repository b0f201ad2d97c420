"""h2load (Debian's `nghttp2-client`) as the benchmarks' light load generator.

The benchmarks run their clients on the same two cores as the servers they measure. A Python
client takes a third of those cores at high request rates (docs/operations.md, "The load
generator's share of the two cores"), which caps both servers and pulls every ratio between them
towards 1. h2load is an event loop in C: remote browsers and PACS take no CPU from a server, and
neither, nearly, does h2load.

Each client is one h2load process with one connection and one request at a time (`-c 1 -m 1`),
asking its own list of URLs in order, so that concurrent clients never ask the same image at the
same moment (h2load's clients within one process would all walk the same list from its start).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Client:
    """One simulated viewer: the URLs it asks in order, and its headers (its token, an Accept)."""

    urls: list[str]
    headers: dict[str, str]


@dataclass
class Outcome:
    """What the clients of one run saw: a latency per answered request, and every failure."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: requests a client made beyond the end of its list, when h2load started over from its first
    #: URL: the caller's lists were too short and some images may have come from a cache
    repeated: int = 0


def require() -> None:
    """Stop the benchmark with the install line rather than a FileNotFoundError mid-run."""
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: apt-get install -y nghttp2-client")


def run_clients(clients: list[Client], seconds: float, folder: Path, http1: bool = False,
                outcome: Outcome | None = None) -> Outcome:
    """Run one h2load process per client for `seconds`, all started together; add to `outcome`.

    `http1` forces HTTP/1.1 (`--h1`), for servers without HTTP/2 or to compare with one that has
    none.
    """
    outcome = outcome if outcome is not None else Outcome()
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for number, client in enumerate(clients):
        listed, log = folder / f"urls-{number}.txt", folder / f"log-{number}.tsv"
        log.unlink(missing_ok=True)  # h2load appends to its log file: each run's rows once
        listed.write_text("\n".join(client.urls) + "\n")
        header_args = [arg for name, value in client.headers.items() for arg in ("-H", f"{name.lower()}: {value}")]
        runs.append((len(client.urls), log, subprocess.Popen(
            ["h2load", "-c", "1", "-m", "1", "-D", f"{seconds:g}", "-i", str(listed), "--log-file", str(log),
             *(["--h1"] if http1 else []), *header_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    for listed_count, log, run in runs:
        _, stderr = run.communicate(timeout=seconds + 120)
        if run.returncode != 0:
            outcome.errors.append(f"h2load exited {run.returncode}: {stderr[-300:]}")
        rows = log.read_text().splitlines() if log.exists() else []
        outcome.repeated += max(0, len(rows) - listed_count)
        for row in rows:
            _, status, micros = row.split("\t")[:3]
            if status == "200":
                outcome.latencies_s.append(int(micros) / 1e6)
            else:
                outcome.errors.append(f"status {status}")
    return outcome
