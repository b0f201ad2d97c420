"""Configuration keys of the toplevel layer (beyond the common ones in shared.config)."""

from daemons.toplevel.passwords import ARGON2_MAX_LANES, ARGON2_MIN_KIB_PER_LANE, MAX_PASSWORD_LENGTH
from shared.config import Key
from shared.tokens import MAX_EXCHANGED_TTL_S

KEYS = (
    Key("database", "url", "sqlite:///toplevel.db",
        "peewee database URL: sqlite:///path (relative to this file), postgresql://..., cockroachdb://..."),
    Key("tokens", "private_key", "", "Ed25519 private key (PEM, mode 0600) that signs access tokens.", True),
    Key("tokens", "access_ttl_s", 300,
        "Lifetime of one session token in seconds (renewed by the client; accepted by the toplevel only, "
        "which re-checks the session on every call).", minimum=1),
    Key("tokens", "exchanged_ttl_s", 55,
        "Lifetime of a token exchanged for one server (institution, render node), 1 to 60 s: with that "
        "server's tokens.leeway_s it bounds how long a revoked session keeps working there.",
        minimum=1, maximum=MAX_EXCHANGED_TTL_S),
    Key("tokens", "patient_reference_ttl_s", 600,
        "Lifetime of a patient reference (what institution servers need to store data of a patient).", minimum=1),
    Key("tokens", "session_max_s", 28800, "Absolute session limit in seconds; renewal stops after it.", minimum=1),
    Key("auth", "max_failed_logins", 5,
        "Failed logins of one username from one client address in the window before 429.", minimum=1),
    Key("auth", "max_failed_logins_per_address", 20,
        "Failed logins per client address in the window before 429 (higher: many users may share a NAT).",
        minimum=1),
    Key("auth", "max_failed_logins_per_username", 100,
        "Failed logins of one username from all addresses together in the window before 429 "
        "(far above max_failed_logins, so guessing from one address cannot lock the user out elsewhere).",
        minimum=1),
    Key("auth", "failed_login_window_s", 300, "Window of the failed-login limit, in seconds.", minimum=1),
    Key("auth", "login_queue_s", 10.0,
        "How long a login waits, when only password checks still running would reach a limit, for them "
        "to finish (a burst of logins behind one address queues instead of getting 429).", minimum=0),
    Key("auth", "min_password_length", 10,
        "Shortest password accepted when setting one (8 at least, as NIST SP 800-63B asks).",
        minimum=8, maximum=MAX_PASSWORD_LENGTH),
    Key("auth", "argon2_time_cost", 3,
        "argon2id passes per hash (hashes made with other costs are redone at login).", minimum=1),
    Key("auth", "argon2_memory_kib", 65536, "argon2id memory per hash in KiB (8 per lane at least).",
        minimum=ARGON2_MIN_KIB_PER_LANE, maximum=2**32 - 1),
    Key("auth", "argon2_parallelism", 4, "argon2id lanes per hash.", minimum=1, maximum=ARGON2_MAX_LANES),
)
