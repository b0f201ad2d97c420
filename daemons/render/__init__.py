"""The render layer: a node that stores DICOM encrypted and renders it on the server.

The modules here are the node itself and the service layer its front doors share: the application
factory, settings and tables every layer has (`app`, `settings`, `models`, found through
daemons/layers.py), what one node's requests share (`node`), the records decoded in RAM and their
stacks (`records`, `stacks`), what every door uses for tokens, audit and figures (`token_cache`,
`view_audit`, `metrics`), and the kernels compiled before serving (`warm`, also a command).
Each part around them has its own sub-package:

- front doors, thin: `api` (the node's own HTTP API), `dicomweb` (PS3.18), `dimse` (pynetdicom);
- `ingest`: the one way instances enter, whichever door they came through;
- `catalogue`: patient, study, series, instance, and DICOM's matching rules for every door;
- `store`: the encrypted, bit-exact store (a local folder or a shared bucket) and its manifests;
- `imaging`: the 2D core (decode, greyscale pipeline, VOI, geometry, encoding), arrays in, out;
- `volume`: the 3D core (MPR and ray casting), arrays in, arrays out.
"""
