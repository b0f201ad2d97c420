"""Reformat (MPR) and 3D volume endpoints of the render node."""

from flask import Blueprint

bp = Blueprint("render_3d", __name__)
