"""One module per console screen; `base` holds what they share."""
