"""The toplevel layer."""
