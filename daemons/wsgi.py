"""The WSGI entry gunicorn loads: `daemons.wsgi:build("<layer>", "<config path>")`."""

from flask import Flask

from daemons.layers import get_layer


def build(layer_name: str, config_path: str) -> Flask:
    layer = get_layer(layer_name)
    return layer.create_app(layer.load_config(config_path))
