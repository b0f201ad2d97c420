"""Configuration keys of a render node (beyond the common ones in shared.config)."""

from shared.config import Key

KEYS = (
    Key("database", "url", "sqlite:///render.db",
        "peewee database URL of the node's own catalogue and audit log (SQLite is the norm)."),
    Key("node", "institution_id", "", "UUID of the institution this node belongs to; only its physicians upload."),
    Key("node", "name", "render-1", "Display name of this node."),
    Key("storage", "dir", "store", "Folder of the encrypted, compressed DICOM store.", True),
    Key("storage", "key_file", "", "32-byte AES-256-GCM key file of the store (mode 0600).", True),
    Key("limits", "max_upload_mb", 2048, "Largest upload (all files of one record) in MiB."),
    Key("limits", "max_files", 4000, "Most files in one record."),
    Key("limits", "max_rows", 8192, "Largest Rows accepted."),
    Key("limits", "max_columns", 8192, "Largest Columns accepted."),
    Key("limits", "max_frames", 4000, "Most frames (slices) in one record."),
    Key("limits", "max_decoded_mb", 4096, "Largest decoded size of one record in MiB."),
    Key("limits", "max_output_px", 2048, "Largest width or height of a rendered image."),
    Key("memory", "budget_mb", 8192, "RAM for decoded records; least recently used are evicted beyond it."),
    Key("render", "backend_3d", "auto",
        "3D back end: auto (OpenGL on a hardware GPU, else the CPU back end, faster than Mesa llvmpipe), "
        "cpu, or vispy."),
    Key("render", "frame_wait_s", 5.0,
        "How long a frame request waits for its slice to be decoded before answering 409 frame_not_ready."),
    Key("render", "image_cache_mb", 256,
        "RAM for encoded images asked for again (same record, slice and parameters); 0 turns it off."),
    Key("render", "webp_method", 2,
        "WebP effort 0..6 while the node keeps up: 2 is a third smaller than 0 for 1.2-1.4x the CPU."),
    Key("render", "webp_busy_encodes", -1,
        "With more WebP encodes than this in flight, new ones use method 0 (larger, faster) until the queue "
        "drains; -1: the number of CPU cores; 0: never."),
    Key("render", "load_threads", 0, "Threads decoding one record's slices (0: one per CPU core)."),
    Key("render", "max_concurrent_3d", 2, "3D renderings at once; more wait briefly, then get 503 busy."),
    Key("audit", "flush_s", 5.0,
        "Seconds between writes of the image-view audit (one entry per user, record and session, with "
        "counts): at most this much is lost if the node is killed hard (0.5..60)."),
    Key("decode", "workers", 2,
        "Worker processes that parse and decode uploads (isolated from the node: a codec crash, hang or "
        "memory blow-up costs one of them, and the upload gets 422). Uploads beyond this wait their turn."),
    Key("decode", "memory_mb", 2048,
        "Address space a decode worker may use beyond its idle size, in MiB (RLIMIT_AS); a file that needs "
        "more is refused."),
    Key("decode", "cpu_s", 30, "CPU seconds one file may take to decode in a worker (RLIMIT_CPU)."),
    Key("decode", "timeout_s", 30.0,
        "Wall-clock seconds one file may take in a decode worker before the worker is killed and replaced."),
)
