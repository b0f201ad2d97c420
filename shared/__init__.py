"""Code common to every SIVR layer: configuration, errors, tokens, authorization, database, TLS."""

__version__ = "0.1.0"
