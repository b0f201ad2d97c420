"""The render node's OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, jsonify

from daemons.render.api import query
from daemons.render.dicomweb import rendered
from daemons.render.imaging.encode import MIMETYPES
from shared import __version__
from shared.tokens import QUERY_TOKEN_PARAM

bp = Blueprint("render_openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}
_ID = {"name": "id", "in": "path", "required": True,
       "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "description": "record id (SHA-256 of the content)"}
_FRAME_INDEX = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0},
                "description": "slice, 0 = first in position order"}
_KEY_PLANE = {"name": "plane", "in": "path", "required": True,
              "schema": {"enum": ["native", "axial", "coronal", "sagittal"]},
              "description": "the view: native (the stored slices) or a reformat"}
_KEY_INDEX = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0},
              "description": "image of that view (0..count-1 of its `planes` entry; outside: 404)"}
_KEY_IMAGES = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {
    "plane": {"type": "string"}, "index": {"type": "integer"}, "stack": {"type": ["string", "null"]},
    "phase": {"type": ["integer", "null"]}, "marked_by": {"type": "string"},
    "marked_at": {"type": "string", "format": "date-time"}}}}}}
_MPR_PATH = [_ID, {"name": "plane", "in": "path", "required": True,
                   "schema": {"enum": ["axial", "coronal", "sagittal"]}},
             {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}]


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _json(schema: dict, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"},
            "description": description}


def _params(declared) -> list[dict[str, Any]]:
    """OpenAPI parameters from the declarations the endpoints parse with (daemons.render.api.query)."""
    return [param.openapi() for param in declared]


_IMAGE = {"description": "the image", "headers": {
    "ETag": {"schema": {"type": "string"}}, "Cache-Control": {"schema": {"type": "string"}},
    "X-Orientation": {"schema": {"type": "string"}, "description": "patient direction at each edge, "
                      "e.g. top=S,right=L,bottom=I,left=R; absent when the record's orientation is unknown"},
    "X-Window": {"schema": {"type": "string"}, "description": "CENTER,WIDTH the image was rendered with "
                 "(the node's default when none was asked for); absent for a VOI LUT, colour or DVR"}},
    "content": {mimetype: {} for mimetype in MIMETYPES.values()}}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Window": {"type": ["object", "null"], "properties": {
        "center": {"type": "number"}, "width": {"type": "number"}, "function": {"type": "string"}}},
    "RecordMeta": {"type": "object", "properties": {
        "id": {"type": "string"}, "files": {"type": "integer"}, "rows": {"type": "integer"},
        "columns": {"type": "integer"}, "frames": {"type": "integer"}, "modality": {"type": "string"},
        "photometric": {"type": "string"}, "bits_stored": {"type": "integer"},
        "pixel_spacing": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                          "description": "row, column spacing in mm; null when unknown (see warnings)"},
        "warnings": {"type": "array", "items": {"type": "string"},
                     "description": "what the viewer should tell the user (e.g. unknown pixel spacing)"},
        "slice_spacing": {"type": "number"}, "default_window": {"$ref": "#/components/schemas/Window"},
        "study_uid": {"type": "string"}, "series_uid": {"type": "string"}, "patient_name": {"type": "string"},
        "patient_id_dicom": {"type": "string"}, "study_date": {"type": "string"},
        "patient_birth_date": {"type": ["string", "null"],
                               "description": "PatientBirthDate (DA); null for records stored before it was kept"},
        "frame_of_reference_uid": {"type": ["string", "null"],
                                   "description": "FrameOfReferenceUID: positions of records sharing it compare; "
                                   "null for records stored before it was kept"},
        "description": {"type": "string"}, "size_bytes": {"type": "integer"},
        "stored_at": {"type": ["string", "null"], "format": "date-time"},
        "slice_thickness": {"type": ["number", "null"]},
        "stack_direction": {"type": ["string", "null"],
                            "description": "patient direction the frame index runs towards"},
        "stored_only": {"type": "integer", "description": "instances of the series stored but never rendered "
                        "(a transfer syntax the node cannot decode, or no image): not counted in files and frames"},
        "slices": {"type": "array", "description": "per frame, in record order (GET of one record only)",
                   "items": {"type": "object", "properties": {
                       "instance": {"type": ["integer", "null"]},
                       "position": {"type": ["array", "null"], "items": {"type": "number"}},
                       "location_mm": {"type": ["number", "null"]},
                       "thickness_mm": {"type": ["number", "null"]},
                       "sop_instance_uid": {"type": ["string", "null"]},
                       "frame_number": {"type": "integer", "description": "frame of that instance, from 1"}}}},
        "planes": {"type": "object", "description": "each plane's geometry (GET of one record only): the "
                   "stored `slices` plane (the frames endpoint) and the axial, coronal and sagittal reformats",
                   "required": ["slices", "axial", "coronal", "sagittal"],
                   "additionalProperties": {"$ref": "#/components/schemas/PlaneGeometry"}},
        "stacks": {"type": "array", "items": {"$ref": "#/components/schemas/Stack"},
                   "description": "the volumes the record holds; MPR and 3D render one (`stack`), the first "
                                  "by default"}}},
    "Stack": {"type": "object", "required": ["id", "label", "frames", "phases", "volume", "rows", "columns",
                                             "pixel_spacing"], "properties": {
        "id": {"type": "string"}, "label": {"type": "string", "description": "what sets it apart: b=500, PHASE, ..."},
        "frames": {"type": "array", "items": {"type": "integer"},
                   "description": "record frame indexes of its first time point, in spatial order: its volume"},
        "phases": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}},
                   "description": "the frames of each time point (the cine axis across time), each in "
                                  "spatial order; MPR and 3D of time point k: `phase=k`"},
        "volume": {"type": "boolean", "description": "false: MPR and 3D of it answer 422 no_volume"},
        "no_volume_reason": {"type": ["string", "null"]},
        "rows": {"type": "integer", "description": "its frames' height in pixels (a series may mix sizes)"},
        "columns": {"type": "integer", "description": "its frames' width in pixels"},
        "pixel_spacing": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                          "description": "its frames' (row, column) spacing in mm; null: unknown"},
        "planes": {"type": "object", "description": "its PlaneGeometry per plane (GET of one record only)",
                   "additionalProperties": {"$ref": "#/components/schemas/PlaneGeometry"}}}},
    "Edges": {"type": ["object", "null"], "required": ["top", "right", "bottom", "left"],
              "description": "patient direction letters (A P L R S I) at each edge; null when the "
                             "orientation is unknown",
              "properties": {edge: {"type": "string"} for edge in ("top", "right", "bottom", "left")}},
    "PlaneGeometry": {"type": "object", "properties": {
        "count": {"type": "integer", "description": "indexes run 0..count-1"},
        "columns": {"type": "integer", "description": "stored samples across the image"},
        "rows": {"type": "integer", "description": "stored samples down the image"},
        "column_mm": {"type": "number"}, "row_mm": {"type": "number"},
        "width_mm": {"type": "number", "description": "columns x column_mm: the image's physical width"},
        "height_mm": {"type": "number", "description": "rows x row_mm"},
        "spacing_mm": {"type": "number", "description": "distance between consecutive indexes"},
        "measurable": {"type": "boolean", "description": "false when the pixel size is unknown (1 mm assumed)"},
        "edges": {"$ref": "#/components/schemas/Edges"},
        "index_direction": {"type": ["string", "null"],
                            "description": "patient direction the index runs towards"},
        "location_mm": {"type": ["object", "null"],
                        "description": "LPS coordinate of the plane on its axis: first + index x step",
                        "properties": {"first": {"type": "number"}, "step": {"type": "number"}}}}},
    "WorklistItem": {"type": "object", "description": "a series waiting for its SIVR patient (docs/API.md)",
                     "properties": {
        "id": {"type": "string"}, "rows": {"type": "integer"}, "columns": {"type": "integer"},
        "frames": {"type": "integer"}, "modality": {"type": "string"},
        "stored_at": {"type": ["string", "null"], "format": "date-time"},
        "received_from": {"type": ["string", "null"], "description": "uploader's user id, or dicom:<AE title>"},
        "patient": {"type": "object", "properties": {k: {"type": "string"} for k in
                                                      ("name", "patient_id", "issuer", "birth_date", "sex")}},
        "study": {"type": "object", "properties": {k: {"type": "string"} for k in
                                                    ("study_uid", "date", "description", "accession_number")}},
        "series": {"type": "object", "properties": {
            "series_uid": {"type": "string"}, "modality": {"type": "string"}, "description": {"type": "string"},
            "count": {"type": "integer"}}}}},
    "LoadStatus": {"type": "object", "properties": {
        "id": {"type": "string"}, "state": {"enum": ["unloaded", "loading", "ready", "error"]},
        "frames_total": {"type": "integer"}, "frames_ready": {"type": "integer"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "frame": {"type": "integer"}, "message": {"type": "string"}}}},
        "stored_only": {"type": "integer", "description": "as in RecordMeta"}}},
}


def _shape(path: str) -> str:
    """A path with its variables blanked, the same for a Flask rule and an OpenAPI path."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def _with_query_tokens(paths: dict[str, Any]) -> dict[str, Any]:
    """Mark the GETs whose view takes the token in the query (`require_auth(token_in_query=True)`,
    the one place that says so) as taking either way."""
    takes = {_shape(rule.rule) for rule in current_app.url_map.iter_rules()
             if getattr(current_app.view_functions[rule.endpoint], "token_in_query", False)}
    for path, item in paths.items():
        if _shape(path) in takes:
            item["get"]["security"] = [{"bearer": []}, {"query_token": []}]
    return paths


def document() -> dict[str, Any]:
    meta_list = {"type": "object", "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/RecordMeta"}}, "total": {"type": "integer"}}}
    meta = {"$ref": "#/components/schemas/RecordMeta"}
    status = {"$ref": "#/components/schemas/LoadStatus"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "SIVR render node", "version": __version__,
                 "description": "Stores encrypted DICOM records, loads them into RAM and renders them."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA)"},
            "query_token": {"type": "apiKey", "in": "query", "name": QUERY_TOKEN_PARAM,
                            "description": "the same token, for image and probe GETs only (RFC 6750 §2.3): a request "
                                           "without an Authorization header needs no CORS preflight"}}},
        "security": [{"bearer": []}],
        "paths": _with_query_tokens({
            "/api/v1/node": {"get": {"summary": "node health figures (administrators of the node's institution "
                                                "and system administrators)",
                                     "responses": {"200": _json({"type": "object"}), **_errors(401, 403)}}},
            "/api/v1/presets": {"get": {"summary": "window and volume presets (with modality: that modality's, "
                                                   "and volume_default, the DVR preset it starts with)",
                                        "parameters": _params(query.PRESETS_PARAMS),
                                        "responses": {"200": _json({"type": "object"}), **_errors(401)}}},
            "/api/v1/records": {
                "get": {"summary": "stored records, newest first: users of the node's institution only; a "
                                   "physician names the patient, an admin may list all (audited per record shown)",
                        "parameters": [
                    _query("patient_id_dicom", "DICOM PatientID (exact); required except for admins of the "
                                               "node's institution"),
                    _query("limit", "page size", {"type": "integer", "default": 50, "maximum": 500}),
                    _query("offset", "page start", {"type": "integer", "default": 0})],
                    "responses": {"200": _json(meta_list), **_errors(400, 401, 403)}},
                "post": {"summary": "upload one record (a multi-frame file or a series of single-frame files)",
                         "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                             "type": "object", "properties": {"files": {"type": "array", "items": {
                                 "type": "string", "format": "binary"}}}}}}},
                         "responses": {"201": _json(meta, "stored"), "200": _json(meta, "already stored"),
                                       **_errors(400, 401, 403, 413, 415, 422)}},
            },
            "/api/v1/records/{id}": {
                "parameters": [_ID],
                "get": {"summary": "record metadata (audited)", "parameters": _params((query.DETAIL,)),
                        "responses": {"200": _json(meta), **_errors(400, 401, 404)}},
                "delete": {"summary": "delete a record",
                           "responses": {"204": {"description": "deleted"}, **_errors(400, 401, 403, 404)}},
            },
            "/api/v1/records/{id}/original": {"parameters": [_ID], "get": {
                "summary": "the stored DICOM file, bit-exact (audited)",
                "parameters": [_query("index", "file index in slice order", {"type": "integer", "default": 0})],
                "responses": {"200": {"description": "DICOM", "content": {"application/dicom": {}}},
                              **_errors(400, 401, 404, 422)}}},
            "/api/v1/records/{id}/load": {"parameters": [_ID], "post": {
                "summary": "load into RAM (audited)",
                "responses": {"202": _json(status), **_errors(400, 401, 404, 415, 507)}}},
            "/api/v1/records/{id}/key-images": {"parameters": [_ID], "get": {
                "summary": "the record's key images (audited; read as the record is)",
                "responses": {"200": _json(_KEY_IMAGES), **_errors(400, 401, 404)}}},
            "/api/v1/records/{id}/key-images/{plane}/{index}": {
                "parameters": [_ID, _KEY_PLANE, _KEY_INDEX],
                "put": {"summary": "mark a key image (users of the node's institution; audited)",
                        "parameters": _params(query.KEY_IMAGE_PARAMS),
                        "responses": {"200": _json(_KEY_IMAGES), **_errors(400, 401, 403, 404, 422)}},
                "delete": {"summary": "unmark a key image (users of the node's institution; audited)",
                           "parameters": _params(query.KEY_IMAGE_PARAMS),
                           "responses": {"204": {"description": "unmarked"}, **_errors(400, 401, 403, 404)}}},
            "/api/v1/records/{id}/status": {"parameters": [_ID], "get": {
                "summary": "load status", "responses": {"200": _json(status), **_errors(400, 401, 404)}}},
            "/api/v1/records/{id}/frames/{index}": {
                "parameters": [_ID, _FRAME_INDEX],
                "get": {"summary": "one rendered slice", "parameters": _params(query.FRAME_PARAMS),
                        "responses": {"200": _IMAGE, "304": {"description": "not modified (If-None-Match)"},
                                      **_errors(400, 401, 404, 409, 415, 422)}}},
            "/api/v1/records/{id}/frames/{index}/value": {
                "parameters": [_ID, _FRAME_INDEX],
                "get": {"summary": "stored and modality value (HU for CT) of the pixel under a point (audited)",
                        "parameters": _params(query.VALUE_PARAMS),
                        "responses": {"200": _json({"type": "object", "properties": {
                            "frame": {"type": "integer"}, "x": {"type": "integer"}, "y": {"type": "integer"},
                            "stored": {"type": ["number", "null"]}, "value": {"type": "number"},
                            "unit": {"type": ["string", "null"]}}}),
                            **_errors(400, 401, 404, 409, 415, 422)}}},
            "/api/v1/records/{id}/frames/{index}/stats": {
                "parameters": [_ID, _FRAME_INDEX],
                "get": {"summary": "mean, SD, min, max (modality units), pixel count and area (mm²) of a "
                                   "rectangle or ellipse ROI (audited)",
                        "parameters": _params(query.STATS_PARAMS),
                        "responses": {"200": _json({"type": "object", "properties": {
                            "frame": {"type": "integer"}, "shape": {"type": "string"},
                            "box": {"type": "array", "items": {"type": "number"}},
                            "count": {"type": "integer"}, "area_mm2": {"type": ["number", "null"]},
                            "unit": {"type": ["string", "null"]}, "mean": {"type": ["number", "null"]},
                            "sd": {"type": ["number", "null"]}, "min": {"type": ["number", "null"]},
                            "max": {"type": ["number", "null"]}}}),
                            **_errors(400, 401, 404, 409, 415, 422)}}},
            "/api/v1/records/{id}/mpr/{plane}/{index}": {
                "parameters": _MPR_PATH,
                "get": {"summary": "a reformatted slice (MPR)", "parameters": _params(query.MPR_PARAMS),
                    "responses": {"200": _IMAGE, **_errors(400, 401, 404, 409, 415, 422)}}},
            "/api/v1/records/{id}/mpr/{plane}/{index}/value": {
                "parameters": _MPR_PATH,
                "get": {"summary": "stored and modality value of the pixel under a point of a reformat (its "
                                   "columns x rows, planes[plane] of RecordMeta), from the stored values (audited)",
                        "parameters": _params((*query.VALUE_PARAMS, query.SLAB, query.SLAB_MODE, query.STACK,
                                               query.PHASE)),
                        "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 404, 409, 415, 422)}}},
            "/api/v1/records/{id}/mpr/{plane}/{index}/stats": {
                "parameters": _MPR_PATH,
                "get": {"summary": "ROI statistics on a reformat, as for a frame; area in mm² of the plane's "
                                   "own row and column spacing (audited)",
                        "parameters": _params((*query.STATS_PARAMS, query.SLAB, query.SLAB_MODE, query.STACK,
                                               query.PHASE)),
                        "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 404, 409, 415, 422)}}},
            "/api/v1/records/{id}/volume": {"parameters": [_ID], "get": {
                "summary": "a 3D rendering", "parameters": _params(query.VOLUME_PARAMS),
                "responses": {"200": _IMAGE, **_errors(400, 401, 404, 409, 415, 422, 503)}}},
            "/api/v1/worklist": {"get": {
                "summary": "series not filed at the institution, with their DICOM patient, study and series: "
                           "physicians and admins of the node's institution (audited per series shown)",
                "parameters": [_query("limit", "page size", {"type": "integer", "default": 50, "maximum": 500}),
                               _query("offset", "page start", {"type": "integer", "default": 0})],
                "responses": {"200": _json({"type": "object", "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/WorklistItem"}},
                    "total": {"type": "integer"}}}), **_errors(400, 401, 403)}}},
            "/api/v1/records/{id}/receipt": {"parameters": [_ID], "post": {
                "summary": "a signed receipt for the caller to register the series at the institution (audited)",
                "responses": {"200": _json({"type": "object", "properties": {
                    "id": {"type": "string"}, "receipt": {"type": "string"}}}), **_errors(400, 401, 403, 404, 409)}}},
            "/api/v1/records/{id}/filed": {"parameters": [_ID], "post": {
                "summary": "mark the series filed at the institution: off the work list (audited, idempotent)",
                "responses": {"200": _json({"type": "object", "properties": {
                    "id": {"type": "string"}, "filed": {"type": "boolean"}}}), **_errors(400, 401, 403, 404)}},
                "delete": {
                "summary": "take the filed mark off: the series is back on the work list (audited record.unfiled)",
                "responses": {"200": _json({"type": "object", "properties": {
                    "id": {"type": "string"}, "filed": {"type": "boolean"}}}), **_errors(400, 401, 403, 404, 409)}}},
            "/api/v1/audit": {"get": {"summary": "the node's audit log (admins of its institution)", "parameters": [
                _query("user_id", "filter"), _query("username", "filter"), _query("action", "e.g. record.load"),
                _query("patient_id", "filter"), _query("since", "ISO 8601"), _query("until", "ISO 8601"),
                _query("limit", "page size", {"type": "integer"}), _query("offset", "page start", {"type": "integer"})],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403)}}},
            "/api/v1/openapi.json": {"get": {"summary": "this document", "security": [],
                                             "responses": {"200": _json({"type": "object"})}}},
            **rendered.openapi_paths(_errors),
        }),
    }


@bp.get("/api/v1/openapi.json")
def openapi():
    return jsonify(document())
