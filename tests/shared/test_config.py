"""Config files: defaults, type checks, unknown keys and documented output."""

import tomllib

import pytest

from daemons.toplevel.settings import KEYS as TOPLEVEL_KEYS
from shared.config import ConfigError, build_config, load_config, render_config_toml


def test_defaults_fill_every_key_and_port_follows_layer():
    config = build_config("toplevel", TOPLEVEL_KEYS)
    assert config["server"]["port"] == 5001
    assert config["tokens"]["access_ttl_s"] == 300
    assert config["database"]["url"].startswith("sqlite:///")


def test_unknown_key_is_refused_with_its_name(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("[server]\nprot = 5\n")
    with pytest.raises(ConfigError, match="server.prot"):
        load_config(path, "toplevel", TOPLEVEL_KEYS)


def test_the_retired_http2_mode_is_refused_naming_the_file_key_and_the_front(tmp_path):
    """`server.http2 = true` (hypercorn, retired on 2026-12-01) stops `sivr` with the reason, not
    "unknown key"; `http2 = false`, in every file written before, still loads; new files omit it."""
    path = tmp_path / "t.toml"
    path.write_text("[server]\nhttp2 = true\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path, "toplevel", TOPLEVEL_KEYS)
    message = str(refused.value)
    assert message.startswith(f"{path}: server.http2 = true is no longer supported"), message
    assert "nginx front" in message and "sivr init --front" in message and "docs/deployment.md" in message
    assert "unknown key" not in message
    path.write_text("[server]\nhttp2 = false\n")
    assert load_config(path, "toplevel", TOPLEVEL_KEYS)["server"]["port"] == 5001
    assert "http2" not in render_config_toml("toplevel", TOPLEVEL_KEYS, {})
    kept = render_config_toml("toplevel", TOPLEVEL_KEYS, {"server": {"http2": True}})
    with pytest.raises(ConfigError, match="server.http2"):  # rewriting an operator's file keeps the refusal
        build_config("toplevel", TOPLEVEL_KEYS, tomllib.loads(kept))


def test_wrong_type_is_refused(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[server]\nport = "5001"\n')
    with pytest.raises(ConfigError, match="server.port.*int"):
        load_config(path, "toplevel", TOPLEVEL_KEYS)


@pytest.mark.parametrize("layer, line", [
    ("render", "[audit]\nflush_s = nan"),  # the flush thread spun on two cores
    ("render", "[decode]\ntimeout_s = nan"),  # every compressed upload a 500
    ("render", "[decode]\ntimeout_s = inf"),  # the decoders' wall-clock limit quietly off
    ("render", "[s3]\nconnect_timeout_s = -nan"),
])
def test_a_number_that_is_not_finite_is_refused_naming_the_key(tmp_path, layer, line):
    """NaN passes every bound, each comparison with it being false."""
    from daemons.render.settings import KEYS as RENDER_KEYS

    path = tmp_path / "t.toml"
    path.write_text(line + "\n")
    key = line.split("]")[0][1:] + "." + line.split("\n")[1].split(" =")[0]
    with pytest.raises(ConfigError, match=f"{path}: `{key}` must be a finite number"):
        load_config(path, layer, RENDER_KEYS)


@pytest.mark.parametrize("line", ["[metrics]\nallow = [5]", "[cors]\norigins = [true]",
                                  '[metrics]\nallow = ["127.0.0.1", ["::1"]]'])
def test_a_list_holds_strings_only(tmp_path, line):
    path = tmp_path / "t.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match="must be a list of strings"):
        load_config(path, "toplevel", TOPLEVEL_KEYS)


def test_bool_is_not_an_int(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("[server]\nworkers = true\n")
    with pytest.raises(ConfigError, match="server.workers"):
        load_config(path, "toplevel", TOPLEVEL_KEYS)


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(path, "toplevel", TOPLEVEL_KEYS)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    path = tmp_path / "sub" / "t.toml"
    path.parent.mkdir()
    path.write_text('[tokens]\npublic_key = "keys/pub.pem"\n')
    config = load_config(path, "toplevel", TOPLEVEL_KEYS)
    assert config["tokens"]["public_key"] == str(tmp_path / "sub" / "keys" / "pub.pem")


def test_rendered_file_documents_every_key_and_round_trips(tmp_path):
    text = render_config_toml("toplevel", TOPLEVEL_KEYS, {"server": {"port": 6001}})
    assert "# Lifetime of one session token" in text
    assert tomllib.loads(text)["server"]["port"] == 6001
    path = tmp_path / "t.toml"
    path.write_text(text)
    assert load_config(path, "toplevel", TOPLEVEL_KEYS)["server"]["port"] == 6001


def test_a_list_of_paths_must_hold_paths(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[tokens]\nextra_public_keys = ["a.pub", 7]\n')
    with pytest.raises(ConfigError, match="extra_public_keys` must be a list of file paths"):
        load_config(path, "toplevel", TOPLEVEL_KEYS)


@pytest.mark.parametrize("values, message", [
    ({"server": {"port": 70000}}, "server.port must be from 0 to 65535, got 70000"),
    ({"server": {"port": -1}}, "server.port must be from 0 to 65535, got -1"),
    ({"server": {"workers": 0}}, "server.workers must be at least 1, got 0"),
    ({"server": {"threads": 0}}, "server.threads must be at least 1, got 0"),
    ({"server": {"timeout_s": -5}}, "server.timeout_s must be at least 0, got -5"),
    ({"server": {"max_request_mb": -1}}, "server.max_request_mb must be at least 1, got -1"),
    ({"server": {"keepalive_s": -1}}, "server.keepalive_s must be at least 0, got -1"),
    ({"tokens": {"leeway_s": -1}}, "tokens.leeway_s must be at least 0, got -1"),
    ({"log": {"level": "verbose"}}, "log.level must be one of debug, info, warning, error, critical, got 'verbose'"),
])
def test_values_the_server_cannot_use_are_refused_naming_file_and_key(tmp_path, values, message):
    """Only the type was checked: port 70000 ended in gunicorn's OverflowError traceback, workers = 0
    listened but never booted a worker, an unknown log level failed in the worker."""
    path = tmp_path / "web.toml"
    body = "".join(f"[{section}]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
                   for section, keys in values.items())
    path.write_text(body)
    with pytest.raises(ConfigError) as raised:
        load_config(path, "web", ())
    assert str(raised.value) == f"{path}: {message}"


@pytest.mark.parametrize("dotted, value, message", [
    ("dicom.port", 70000, "dicom.port must be from 0 to 65535, got 70000"),
    ("dicom.tls_port", -1, "dicom.tls_port must be from 0 to 65535, got -1"),
    ("memory.budget_mb", -1, "memory.budget_mb must be at least 1, got -1"),
    ("s3.read_timeout_s", 0.0, "s3.read_timeout_s must be above 0, got 0.0"),
    ("limits.max_upload_mb", -2048, "limits.max_upload_mb must be at least 1, got -2048"),
    ("render.webp_method", 7, "render.webp_method must be from 0 to 6, got 7"),
    ("audit.flush_s", 0.1, "audit.flush_s must be from 0.5 to 60, got 0.1"),
])
def test_render_keys_are_bounded(dotted, value, message):
    from daemons.render.settings import KEYS

    section, name = dotted.split(".")
    with pytest.raises(ConfigError, match=f"^<config>: {message}$"):
        build_config("render", KEYS, {section: {name: value}})


@pytest.mark.parametrize("dotted, value, message", [
    ("tokens.access_ttl_s", 0, "tokens.access_ttl_s must be at least 1, got 0"),
    ("tokens.session_max_s", -1, "tokens.session_max_s must be at least 1, got -1"),
    ("tokens.patient_reference_ttl_s", 0, "tokens.patient_reference_ttl_s must be at least 1, got 0"),
    ("auth.max_failed_logins", 0, "auth.max_failed_logins must be at least 1, got 0"),
    ("auth.max_failed_logins_per_address", -3, "auth.max_failed_logins_per_address must be at least 1, got -3"),
    ("auth.failed_login_window_s", 0, "auth.failed_login_window_s must be at least 1, got 0"),
    ("auth.login_queue_s", -1.0, "auth.login_queue_s must be at least 0, got -1.0"),
    ("auth.min_password_length", 4, "auth.min_password_length must be from 8 to 1024, got 4"),
    ("auth.min_password_length", 2000, "auth.min_password_length must be from 8 to 1024, got 2000"),
    ("auth.argon2_time_cost", 0, "auth.argon2_time_cost must be at least 1, got 0"),
    ("auth.argon2_parallelism", 0, "auth.argon2_parallelism must be from 1 to 16777215, got 0"),
    ("auth.argon2_memory_kib", 4, "auth.argon2_memory_kib must be from 8 to 4294967295, got 4"),
])
def test_toplevel_keys_are_bounded(dotted, value, message):
    """Only the type was checked: a password minimum of 4 was taken, max_failed_logins = 0 refused
    every login, argon2_parallelism = 0 stopped the toplevel with argon2's bare HashingError."""
    section, name = dotted.split(".")
    with pytest.raises(ConfigError, match=f"^<config>: {message}$"):
        build_config("toplevel", TOPLEVEL_KEYS, {section: {name: value}})


def test_argon2_memory_too_small_for_its_lanes_names_both_keys():
    from daemons.toplevel.passwords import passwords_from_config

    config = build_config("toplevel", TOPLEVEL_KEYS, {"auth": {"argon2_memory_kib": 16, "argon2_parallelism": 4}})
    with pytest.raises(ConfigError, match=r"^<config>: auth.argon2_memory_kib must be at least 8 per lane "
                                          r"\(32 for auth.argon2_parallelism = 4\), got 16$"):
        passwords_from_config(config)
    lean = build_config("toplevel", TOPLEVEL_KEYS, {"auth": {"argon2_memory_kib": 8, "argon2_parallelism": 1,
                                                             "argon2_time_cost": 1}})
    assert passwords_from_config(lean).verify(passwords_from_config(lean).hash("x" * 8), "x" * 8)


def test_the_bounds_themselves_are_allowed():
    """Edges that mean something today stay valid: port 0 (the layer's default; DICOM off)."""
    from daemons.render.settings import KEYS

    config = build_config("render", KEYS, {"server": {"port": 65535, "workers": 1}, "dicom": {"port": 0},
                                           "render": {"webp_busy_encodes": -1, "image_cache_mb": 0},
                                           "log": {"level": "debug"}})
    assert config["server"]["port"] == 65535 and config["dicom"]["port"] == 0
    # what every release read before the bounds: a level in capitals, gunicorn's "no worker timeout"
    config = build_config("render", KEYS, {"server": {"timeout_s": 0}, "log": {"level": "INFO"}})
    assert config["server"]["timeout_s"] == 0 and config["log"]["level"] == "INFO"
    assert build_config("render", KEYS, {"log": {"level": "critical"}})["log"]["level"] == "critical"
