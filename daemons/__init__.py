"""The SIVR server layers (toplevel, institution, render node), each a Flask app served by gunicorn."""
