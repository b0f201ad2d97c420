"""Configuration keys of an institution server (beyond the common ones in shared.config)."""

from shared.config import Key

KEYS = (
    Key("database", "url", "sqlite:///institution.db",
        "peewee database URL: sqlite:///path (relative to this file), postgresql://..., cockroachdb://..."),
    Key("institution", "id", "", "UUID of the institution this server belongs to (as known to the toplevel)."),
    Key("institution", "name", "", "Display name of the institution."),
    Key("identity", "issuer_of_patient_id", "",
        "IssuerOfPatientID (0010,0021) that this institution's insurance numbers are issued under. Empty: "
        "the work list matches a series to a SIVR patient by PatientID alone; set: PatientID and this issuer "
        "(webviewer/static/js/patient_match.js, docs/architecture.md)."),
)
