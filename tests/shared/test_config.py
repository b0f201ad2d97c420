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


def test_wrong_type_is_refused(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[server]\nport = "5001"\n')
    with pytest.raises(ConfigError, match="server.port.*int"):
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
