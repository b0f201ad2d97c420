"""The 2D core: stored frames to displayed pixels, arrays in and arrays out, and their encoding.

Decoding, the PS3.3 C.11 greyscale pipeline and VOI, overlays and burnt-in annotations, the output
geometry of an image, readings of original values, the published geometry of planes and slices,
and the encoders with their cache. No HTTP here (the doors call it); the 3D core (`volume`)
renders from the same pixel pipeline.
"""
