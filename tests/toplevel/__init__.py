"""Toplevel API tests."""
