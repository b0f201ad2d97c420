"""RAM of one loaded record, measured in a fresh process (so no earlier buffer is reused).

    python -m bench.bench_2d_ram CONFIG_JSON RECORD_ID  ->  prints a JSON object

Run by bench_2d.py: RSS is read before and after loading the record, and again after a second
viewer's load of the same record (which must share the first copy).
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

from daemons.render.app import create_app
from daemons.render.settings import KEYS
from shared.config import build_config


def rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    values = json.loads(Path(sys.argv[1]).read_text())
    record_id = sys.argv[2]
    app = create_app(build_config("render", KEYS, values))
    registry = app.extensions["sivr_records"]
    app.extensions["sivr_node"].manifest(record_id)  # the manifest is not part of the record's pixels
    gc.collect()
    before = rss_bytes()
    record = registry.load(record_id)
    assert record.wait_complete(300) and not record.errors
    gc.collect()
    loaded = rss_bytes()
    second = registry.load(record_id)
    again = rss_bytes()
    print(json.dumps({
        "decoded_bytes": record.nbytes, "rss_growth_bytes": loaded - before,
        "ratio": (loaded - before) / record.nbytes, "second_viewer_same_copy": second is record,
        "rss_growth_second_viewer_bytes": again - loaded,
    }))
    registry.shutdown()


if __name__ == "__main__":
    main()
