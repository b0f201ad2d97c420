"""The institution layer."""
