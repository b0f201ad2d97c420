"""How instances enter a render node: checks, isolated decoding, series and stack analysis, storing.

The one path for every door (a browser upload, STOW-RS, C-STORE): untrusted files are parsed and
decoded in worker processes, refused with a reason or analysed into their series (slice order,
geometry, default windows, stacks), then stored and indexed. Separate so the rules that decide what
the node accepts are written once, apart from the doors that receive the bytes.
"""
