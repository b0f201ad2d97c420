"""The node's own HTTP API (`/api/v1/...`): one of the node's three front doors.

Each blueprint parses a request (the image parameters are declared once, in `query`, and the
OpenAPI document is built from the same declarations), calls the service layer (the node, its
loaded records, the catalogue, the store, the 2D and 3D cores) and encodes the answer. It is kept
apart from DICOMweb and DIMSE so that a door stays a thin translation of its protocol, and a rule
that every door obeys is found in the shared layer, not in the door a request happened to use.
"""
