"""The administrators' desktop console (PySide6)."""
