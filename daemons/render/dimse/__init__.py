"""The node's DIMSE front door (pynetdicom): C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE, DICOM TLS.

A DICOM listener runs in the node's own process, beside the HTTP doors: a C-STORE enters through the
same ingest service as an upload or STOW-RS, and C-FIND, C-GET and C-MOVE match the catalogue with
the same rules as QIDO-RS. It is a package of its own because its protocol (associations, presentation
contexts, status codes, peers configured per institution) has nothing in common with HTTP's.
"""
