"""The node's DICOM catalogue: patient, study, series, instance, and how queries match it.

The index every door queries (C-FIND, C-GET, C-MOVE, QIDO-RS, the work list) and the record index
that keeps it in step with the store, which stays the truth: these tables are derived data, rebuilt
from the store for any series they miss. Separate from the store so that queries, their DICOM
matching rules and the catalogue's upkeep are one definition, whichever door asks.
"""
