"""Configuration keys of a render node (beyond the common ones in shared.config)."""

from shared.config import PORT_MAX, Key

#: The routes whose bodies are DICOM files, as nginx locations: the node's upload (`POST
#: /api/v1/records`) and STOW-RS (`POST /dicomweb/studies[/{study}]`). The node checks, holds and
#: stores those bodies as they arrive, so its front streams them; it reads every other body whole
#: before passing it on (daemons/front.py).
STREAMED_LOCATIONS = ("= /api/v1/records", "^~ /dicomweb/studies")

KEYS = (
    Key("database", "url", "sqlite:///render.db",
        "peewee database URL of the node's own catalogue and audit log (SQLite is the norm)."),
    Key("node", "institution_id", "", "UUID of the institution this node belongs to; only its physicians upload."),
    Key("node", "name", "render-1", "Display name of this node."),
    Key("node", "receipt_key", "",
        "Ed25519 private key (PEM, mode 0600) signing this node's upload receipts; created at start-up when "
        "the file is missing. Its public half (GET /api/v1/node) is registered with the node at the "
        "institution server, which registers records only with a receipt it verifies.", True),
    Key("storage", "backend", "local",
        "Where records live: local (storage.dir on this node) or s3 (a bucket shared by the institution's "
        "nodes, see [s3])."),
    Key("storage", "dir", "store", "Folder of the encrypted, compressed DICOM store (backend local).", True),
    Key("storage", "key_file", "",
        "32-byte key file (mode 0600): the AES-256-GCM store key (local), or the key-encryption key that wraps "
        "each record's data key (s3; every node sharing the bucket needs the same one).", True),
    Key("storage", "old_key_files", [],
        "s3: earlier key-encryption keys still accepted for unwrapping after a rotation, until "
        "`sivr store rewrap` has rewrapped every record under storage.key_file. Refused with backend local "
        "(one key, nothing wrapped).", True),
    Key("storage", "catalogue_refresh_s", 30.0,
        "A record list older than this re-reads the store's record ids first (records other nodes stored).",
        minimum=0),
    Key("storage", "manifest_refresh_s", 2.0,
        "A cached series manifest older than this is checked against the store's version before use, so a "
        "series another node grew (shared S3 store) is seen within this time.", minimum=0),
    Key("s3", "endpoint_url", "", "S3 API endpoint, e.g. https://s3.example.org:8333 (backend s3)."),
    Key("s3", "bucket", "", "Bucket shared by the render nodes of this institution."),
    Key("s3", "prefix", "", "Key prefix of this institution in the bucket (one per institution), e.g. north/."),
    Key("s3", "region", "us-east-1", "Region name used in request signatures."),
    Key("s3", "credentials_file", "",
        "JSON file {\"access_key_id\", \"secret_access_key\"} (mode 0600) of this institution's S3 user.", True),
    Key("s3", "verify_tls", True, "Verify the endpoint's TLS certificate (https endpoints)."),
    Key("s3", "ca_file", "", "CA bundle (PEM) for the endpoint's certificate; empty: the system's.", True),
    Key("s3", "path_style", True, "Path-style addressing (endpoint/bucket/key), as most on-premises stores need."),
    Key("s3", "connect_timeout_s", 2.0, "Seconds to connect before the store counts as unreachable (503).",
        minimum=0, above=True),
    Key("s3", "read_timeout_s", 20.0, "Seconds to wait for an answer before the store counts as unreachable.",
        minimum=0, above=True),
    Key("s3", "max_attempts", 2, "Attempts per S3 call (1: no retry) before answering 503 store_unavailable.",
        minimum=1),
    Key("s3", "threads", 8, "Parallel object uploads per record.", minimum=1),
    Key("s3", "cache_dir", "",
        "Folder of this node's copy of file objects it stored or read (ciphertext, as in the bucket), so loading "
        "a series again needs no GET per slice; empty: no cache.", True),
    Key("s3", "cache_mb", 20480, "Most MiB kept in s3.cache_dir (least recently used out first).", minimum=0),
    Key("s3", "stale_upload_s", 3600.0,
        "Objects of an upload no manifest names are deleted at start-up once older than this (interrupted uploads).",
        minimum=0),
    Key("limits", "max_upload_mb", 2048, "Largest upload (all files of one record) in MiB; also the largest "
        "DIMSE message (a C-STORE's data set) the DICOM listener receives: a larger one aborts its association.",
        minimum=1),
    Key("limits", "upload_memory_mb", 8192,
        "RAM that bodies being stored (uploads, STOW-RS, C-STORE data sets) may take at once per server process, "
        "counted as three times each body as its bytes arrive; one that finds no room is refused at once (503 busy, "
        "or its DICOM association aborted) and may be sent again. A body alone always fits.",
        minimum=1),
    Key("limits", "uploads_per_user", 0,
        "Uploads (browser uploads and STOW-RS requests) one user may send to one server process at once; one more "
        "is refused at once (429 too_many_uploads, Retry-After), so that one account cannot hold every request "
        "thread with slowly sent bodies. 0: half of server.threads (at least 1).", minimum=0),
    Key("limits", "max_files", 4000, "Most files in one record.", minimum=1),
    Key("limits", "max_rows", 8192, "Largest Rows accepted.", minimum=1),
    Key("limits", "max_columns", 8192, "Largest Columns accepted.", minimum=1),
    Key("limits", "max_frames", 4000, "Most frames (slices) in one record.", minimum=1),
    Key("limits", "max_decoded_mb", 4096, "Largest decoded size of one record in MiB.", minimum=1),
    Key("limits", "max_header_elements", 50_000,
        "Most data elements and sequence items in one file's header, plus 150 a frame (a CT slice holds "
        "about 300; the largest structure sets and dose reports tens of thousands). Counted before the "
        "file is parsed: each costs the node about 20 µs and a kilobyte to read.", minimum=1000),
    Key("limits", "max_header_values", 1_000_000,
        "Most values in one file's text elements (backslash-separated: a structure set's contour points "
        "are three each). Raise it for radiotherapy structure sets of millions of points: each value "
        "costs the node about 5 µs and 260 bytes at upload and at every metadata answer.", minimum=1000),
    Key("limits", "max_upload_header_elements", 2_000_000,
        "Most data elements and sequence items all the files of one upload hold together (a browser upload, the "
        "instances of one STOW-RS request that go to one series, a C-STORE data set): a 2,000-slice CT holds "
        "260,000 to 600,000. Counted before any file is parsed, so that limits.max_header_elements does not "
        "multiply by limits.max_files.", minimum=1000),
    Key("limits", "max_upload_header_values", 4_000_000,
        "Most text values (as limits.max_header_values counts them) all the files of one upload hold together.",
        minimum=1000),
    Key("limits", "max_output_px", 2048, "Largest width or height of a rendered image.", minimum=1),
    Key("memory", "budget_mb", 8192, "RAM for decoded records; least recently used are evicted beyond it.",
        minimum=1),
    Key("render", "backend_3d", "auto",
        "3D back end: auto (OpenGL on a hardware GPU, else the CPU back end, faster than Mesa llvmpipe), "
        "cpu, or vispy."),
    Key("render", "frame_wait_s", 5.0,
        "How long a frame request waits for its slice to be decoded before answering 409 frame_not_ready.",
        minimum=0),
    Key("render", "image_cache_mb", 256,
        "RAM for encoded images asked for again (same record, slice and parameters), their bookkeeping "
        "included; 0 turns it off.", minimum=0),
    Key("render", "webp_method", 2,
        "WebP effort 0..6 while the node keeps up: 2 is a third smaller than 0 for 1.2-1.4x the CPU.",
        minimum=0, maximum=6),
    Key("render", "webp_busy_encodes", -1,
        "With more WebP encodes than this in flight, new ones use method 0 (larger, faster) until the queue "
        "drains; -1: the number of CPU cores; 0: never.", minimum=-1),
    Key("render", "load_threads", 0, "Threads decoding one record's slices (0: one per CPU core).", minimum=0),
    Key("render", "max_concurrent_3d", 2,
        "3D views rendered and encoded at once; more wait briefly, then get 503 busy.", minimum=1),
    Key("audit", "flush_s", 5.0,
        "Seconds between writes of the image-view audit (one entry per user, record and session, with "
        "counts): at most this much is lost if the node is killed hard (0.5..60).", minimum=0.5, maximum=60),
    Key("dicom", "port", 0, "TCP port of the node's DICOM (DIMSE) listener; 0 turns it off (11112 is usual).",
        minimum=0, maximum=PORT_MAX),
    Key("dicom", "host", "127.0.0.1", "Address the DICOM listener binds to."),
    Key("dicom", "ae_title", "SIVR", "The node's own AE title (called AE title peers must use)."),
    Key("dicom", "allowed_callers", [],
        "Calling AE titles allowed to associate (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE), each alone (from any "
        "address) or bound to the IP addresses it calls from: \"CT01@10.20.5.7\", \"PACS@10.20.9.0/24\"; "
        "any other caller is rejected."),
    Key("dicom", "series_complete_s", 60.0,
        "A series is complete once no instance has arrived for this many seconds (whichever door they came "
        "through): its exact analysis (the automatic window from its middle frame) is made then, and its "
        "files leave the receiving cache. It is viewable while it grows.", minimum=0, above=True),
    Key("dicom", "destinations", [],
        "C-MOVE destinations, each \"AE_TITLE=host:port\" (e.g. \"WORKSTATION=10.0.0.7:104\"), or "
        "\"AE_TITLE=tls://host:port\" for one reached over DICOM TLS: a C-MOVE may send "
        "only to an AE title listed here (others get 0xA801, move destination unknown)."),
    Key("dicom", "tls_port", 0,
        "TCP port of a second DICOM listener that speaks TLS only (DICOM TLS, PS3.15 Annex B; 2762 is usual): "
        "same AE title, callers and services as `dicom.port`; 0: none. Set `dicom.port = 0` for TLS only.",
        minimum=0, maximum=PORT_MAX),
    Key("dicom", "tls_cert", "", "PEM certificate chain of the node for DICOM TLS (empty: server.tls_cert).", True),
    Key("dicom", "tls_key", "", "PEM private key for DICOM TLS (empty: server.tls_key).", True),
    Key("dicom", "tls_ca", "",
        "PEM CA certificate(s) that vouch for callers' certificates on the TLS listener and for the certificates "
        "of `tls://` C-MOVE destinations (empty: no client certificates checked, system CAs for destinations).",
        True),
    Key("dicom", "tls_require_client_cert", True,
        "The TLS listener refuses a caller without a certificate from `dicom.tls_ca` (Annex B: both ends "
        "authenticate). Off: a caller's certificate is checked only when it sends one."),
    Key("dicom", "max_find_matches", 50_000,
        "The most entities one C-FIND answers (PS3.4 C.4.1: one response each); a query matching more is "
        "refused with 0xA700 (Out of Resources), naming this key, so the peer narrows it. An IMAGE-level "
        "query with no key lists every instance of the archive, held in memory before the first answer.",
        minimum=1),
    Key("dicom", "max_associations", 10,
        "Associations served at once; a peer asking for more is rejected (A-ASSOCIATE-RJ, transient, local limit "
        "exceeded).", minimum=1),
    Key("dicom", "max_associations_per_address", 0,
        "Connections one IP address may hold at once, associated or not (at most dicom.max_associations; 0: half "
        "of them, at least one): one more is closed as it opens, so that one address (a stranger's included) "
        "cannot take every place.",
        minimum=0),
    Key("dicom", "max_associations_per_title", 0,
        "Associations one calling AE title may hold at once, from whatever addresses (at most "
        "dicom.max_associations; 0: as many as dicom.max_associations_per_address allows one address): one more "
        "is rejected (A-ASSOCIATE-RJ, transient, local limit exceeded). Raise it for a modality that opens "
        "several associations at once from addresses of its own while the per-address limit stays tight.",
        minimum=0),
    Key("dicom", "request_timeout_s", 10.0,
        "Seconds a new connection has to send its A-ASSOCIATE-RQ (PS3.8's ARTIM timer; for DICOM TLS, the "
        "handshake included) before it is closed.", minimum=0, above=True),
    Key("dicom", "network_timeout_s", 60.0,
        "Seconds an association may stay silent (no PDU, or a PDU that stops half-way) before it is aborted.",
        minimum=0, above=True),
    Key("dicom", "acse_timeout_s", 30.0,
        "Seconds to wait for an association's acceptance or release answer before aborting (its request: "
        "dicom.request_timeout_s).",
        minimum=0, above=True),
    Key("dicom", "dimse_timeout_s", 60.0,
        "Seconds to wait for a DIMSE message (e.g. a C-STORE response to a C-GET or C-MOVE sub-operation) before "
        "aborting the association.", minimum=0, above=True),
    Key("dicomweb", "cors_origins", [],
        "Browser origins (scheme://host:port) allowed to call the DICOMweb root /dicomweb from a page of "
        "their own, e.g. an OHIF viewer served elsewhere; empty: same-origin only."),
    Key("dicomweb", "load_wait_s", 30.0,
        "How long a DICOMweb reformat or 3D view waits for its series to load into RAM (DICOMweb clients "
        "do not poll a load status) before answering 409 loading with Retry-After.", minimum=0),
    Key("decode", "workers", 2,
        "Worker processes that parse and decode uploads (isolated from the node: a codec crash, hang or "
        "memory blow-up costs one of them, and the upload gets 422). Uploads beyond this wait their turn.",
        minimum=1),
    Key("decode", "memory_mb", 2048,
        "Address space a decode worker may use beyond its idle size, in MiB (RLIMIT_AS); a file that needs "
        "more is refused.", minimum=64),
    Key("decode", "cpu_s", 30, "CPU seconds one file may take to decode in a worker (RLIMIT_CPU).", minimum=1),
    Key("decode", "timeout_s", 30.0,
        "Wall-clock seconds one file may take in a decode worker before the worker is killed and replaced.",
        minimum=0, above=True),
    Key("decode", "codec_threads", 2,
        "Threads a decode worker's JPEG 2000 decoder uses for one frame: a worker checks a file's frames "
        "one after another, so with 1 a modality sending one image at a time keeps one core busy (a "
        "512x512 CT slice: about 28 ms on one thread, 15 ms on two). Each thread's buffers count within "
        "decode.memory_mb.", minimum=1, maximum=64),
    Key("decode", "nice", 10,
        "Scheduling niceness the decode workers add to their own (0 to 19): when the cores are busy, "
        "rendering for viewers goes first and uploads' checks take what is left.", minimum=0, maximum=19),
)
