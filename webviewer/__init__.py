"""The physicians' web viewer and the small web layer that serves it."""
