// The shapes of the answers the viewer reads from servers it does not control (limits.js). A node
// or institution server that is broken or taken over may answer `null`, a string where a number
// belongs, a frame count of 10^9 or a spacing of 1e400 (Infinity once parsed); read unchecked they
// ended as TypeErrors that left the viewer half drawn, or as NaN in its geometry. Each Shape here
// says what an answer must hold, within the bounds the servers themselves keep (docs/API.md), and
// api.js `shaped` turns a failed check into a bad answer naming the server and the field.
// Bounds are the servers' own, never tighter: a node's `limits.max_frames` has no upper bound, so
// a frame count is held to the record's own slices and plane geometry, not to a number of ours.

/** What a server answer must hold. @typedef {{asked: string, check: (body: any) => void}} Shape */

/** A check that failed: its message names the field (ours, never the server's text). */
export class ShapeError extends Error {}

/** DICOM Rows and Columns are US values: no stored image is larger on a side. */
const DICOM_MAX_SIDE = 65535;

/** @param {boolean} ok @param {string} problem */
export function need(ok, problem) {
  if (!ok) throw new ShapeError(problem);
}

/** @param {any} value @returns {boolean} */
export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** @param {any} value @param {string} name */
export function object(value, name) {
  need(isObject(value), `${name} is no object`);
}

/** A whole number from 0 to `max`. @param {any} value @param {string} name @param {number} [max] */
export function count(value, name, max = Number.MAX_SAFE_INTEGER) {
  need(Number.isInteger(value) && value >= 0, `${name} is no count`);
  need(value <= max, `${name} is more than ${max}`);
}

/** @param {any} value @param {string} name */
function finite(value, name) {
  need(Number.isFinite(value), `${name} is no finite number`);
}

/** @param {any} value @param {string} name */
function notNegative(value, name) {
  finite(value, name);
  need(value >= 0, `${name} is negative`);
}

/** @param {any} value @param {string} name */
export function text(value, name) {
  need(typeof value === "string", `${name} is no text`);
}

/** @param {any} value @param {string} name */
function bool(value, name) {
  need(typeof value === "boolean", `${name} is neither true nor false`);
}

/**
 * `check` of `value` unless it is null or absent (a field older nodes lack, or "unknown").
 * @param {any} value @param {string} name @param {(value: any, name: string) => void} check
 */
export function optional(value, name, check) {
  if (value != null) check(value, name);
}

/**
 * A list each of whose items passes `each`.
 * @param {any} value @param {string} name @param {(item: any, name: string) => void} each
 */
export function listOf(value, name, each) {
  need(Array.isArray(value), `${name} is no list`);
  value.forEach((item, i) => each(item, `${name}[${i}]`));
}

/** The `{items: [object]}` of every list answer (a page of a list, the key images). @param {any} body */
export function items(body) {
  object(body, "the answer");
  listOf(body.items, "items", object);
}

/** A page of a list endpoint: `{items: [object], total}`. @type {Shape} */
export const LIST_PAGE = {
  asked: "the list",
  check(body) {
    items(body);
    finite(body.total, "total");
  },
};

/**
 * A page of a list endpoint whose every item passes `each` (named `items[i]`, its index on the page):
 * an item `null` or a field of another type ended as a TypeError where the list was drawn.
 * @param {string} asked @param {(item: any, name: string) => void} each @returns {Shape}
 */
export function pageOf(asked, each) {
  return {
    asked,
    check(body) {
      LIST_PAGE.check(body);
      body.items.forEach((item, i) => each(item, `items[${i}]`));
    },
  };
}

/**
 * The name of field `key` of the object named `name`: an answer's own fields go by their keys
 * ("id"), an item's by its place ("items[0].id").
 * @param {string} name @param {string} key
 */
function fieldOf(name, key) {
  return name ? `${name}.${key}` : key;
}

/** @param {any} window @param {string} name */
function windowShape(window, name) {
  object(window, name);
  finite(window.center, `${name}.center`);
  finite(window.width, `${name}.width`);
}

/** A pixel spacing (row, column) in mm. @param {any} spacing @param {string} name */
function spacingPair(spacing, name) {
  need(Array.isArray(spacing) && spacing.length === 2, `${name} is no pair`);
  spacing.forEach((mm, i) => notNegative(mm, `${name}[${i}]`));
}

/** @param {any} slice @param {string} name */
function sliceShape(slice, name) {
  object(slice, name);
  optional(slice.instance, `${name}.instance`, finite);
  optional(slice.position, `${name}.position`, (position, field) => {
    need(Array.isArray(position) && position.length === 3, `${field} is no point`);
    position.forEach((mm, i) => finite(mm, `${field}[${i}]`));
  });
  optional(slice.location_mm, `${name}.location_mm`, finite);
  optional(slice.thickness_mm, `${name}.thickness_mm`, finite);
  optional(slice.sop_instance_uid, `${name}.sop_instance_uid`, text);
}

/**
 * One plane's geometry (PlaneGeometry, daemons/render/imaging/planes.py): its index count and image
 * size, each side at most a stored image's side or the record's frame count (a reformat's side
 * runs across the frames); its sizes in mm positive wherever it has pixels (the viewer divides by them).
 * @param {any} plane @param {string} name @param {number} frames
 */
function planeShape(plane, name, frames) {
  object(plane, name);
  const side = Math.max(DICOM_MAX_SIDE, frames);
  count(plane.count, `${name}.count`, side);
  count(plane.columns, `${name}.columns`, side);
  count(plane.rows, `${name}.rows`, side);
  for (const key of ["column_mm", "row_mm", "width_mm", "height_mm"]) {
    notNegative(plane[key], `${name}.${key}`);
    need(plane[key] > 0 || plane.columns * plane.rows === 0, `${name}.${key} is 0`);
  }
  optional(plane.spacing_mm, `${name}.spacing_mm`, notNegative);
  bool(plane.measurable, `${name}.measurable`);
  optional(plane.edges, `${name}.edges`, (edges, field) => {
    object(edges, field);
    for (const edge of ["top", "right", "bottom", "left"]) text(edges[edge], `${field}.${edge}`);
  });
  optional(plane.index_direction, `${name}.index_direction`, text);
  optional(plane.location_mm, `${name}.location_mm`, (location, field) => {
    object(location, field);
    finite(location.first, `${field}.first`);
    finite(location.step, `${field}.step`);
  });
}

/** @param {any} planes @param {string} name @param {number} frames */
function planeTable(planes, name, frames) {
  object(planes, name);
  for (const [plane, geometry] of Object.entries(planes)) planeShape(geometry, `${name}.${plane}`, frames);
}

/** A list of record frame indexes. @param {any} frames @param {string} name @param {number} total */
function frameList(frames, name, total) {
  listOf(frames, name, (frame, field) => need(Number.isInteger(frame) && frame >= 0 && frame < total, `${field} is no frame of the record`));
}

/** @param {any} stack @param {string} name @param {number} frames */
function stackShape(stack, name, frames) {
  object(stack, name);
  text(stack.id, `${name}.id`);
  text(stack.label, `${name}.label`);
  frameList(stack.frames, `${name}.frames`, frames);
  listOf(stack.phases, `${name}.phases`, (phase, field) => frameList(phase, field, frames));
  count(stack.rows, `${name}.rows`, DICOM_MAX_SIDE);
  count(stack.columns, `${name}.columns`, DICOM_MAX_SIDE);
  optional(stack.pixel_spacing, `${name}.pixel_spacing`, spacingPair);
  optional(stack.planes, `${name}.planes`, (planes, field) => planeTable(planes, field, frames));
}

/** The texts of RecordMeta the viewer shows or compares (null where unknown). */
const RECORD_TEXTS = ["modality", "description", "series_description", "study_description", "study_uid", "series_uid",
  "frame_of_reference_uid", "patient_name", "patient_id_dicom", "patient_birth_date", "study_date", "study_time",
  "stack_direction"];

/**
 * A record's metadata (RecordMeta, docs/API.md): in full detail (`slices`, `planes`) or as lists and
 * `detail=summary` give it. Its frame count must be that of its own slices and stored plane: a
 * count of 10^9 beside 4 slices is refused, a real series of thousands of frames is not.
 * @param {any} meta
 */
function recordMeta(meta) {
  object(meta, "the record");
  need(typeof meta.id === "string" && meta.id !== "", "id is no id");
  count(meta.frames, "frames");
  count(meta.rows, "rows", DICOM_MAX_SIDE);
  count(meta.columns, "columns", DICOM_MAX_SIDE);
  for (const key of RECORD_TEXTS) optional(meta[key], key, text);
  optional(meta.files, "files", count);
  optional(meta.series_number, "series_number", finite);
  optional(meta.slice_thickness, "slice_thickness", finite);
  optional(meta.default_window, "default_window", windowShape);
  optional(meta.pixel_spacing, "pixel_spacing", spacingPair);
  optional(meta.warnings, "warnings", (warnings, name) => listOf(warnings, name, text));
  optional(meta.slices, "slices", (slices, name) => {
    listOf(slices, name, sliceShape);
    need(slices.length === meta.frames, `${name} has ${slices.length} entries for ${meta.frames} frames`);
  });
  optional(meta.planes, "planes", (planes, name) => {
    planeTable(planes, name, meta.frames);
    need(isObject(planes.slices) && planes.slices.count === meta.frames, `${name}.slices does not count the record's frames`);
  });
  optional(meta.stacks, "stacks", (stacks, name) => listOf(stacks, name, (stack, field) => stackShape(stack, field, meta.frames)));
}

/**
 * The metadata (RecordMeta) of record `id`: a node answering another record's would have that
 * record's images shown, and annotated, under this one's name.
 * @param {string} id @returns {Shape}
 */
export function recordShape(id) {
  return answerAbout(id, "the record", "record", recordMeta);
}

/**
 * A Shape for the answer about `id`: `check`, then its `id` must be the one asked for (an answer
 * about another `kind` of the same name would be shown, changed or deleted in this one's place).
 * @param {string} id @param {string} asked @param {string} kind @param {(body: any) => void} check
 * @returns {Shape}
 */
export function answerAbout(id, asked, kind, check) {
  return {
    asked,
    check: (body) => {
      check(body);
      need(body.id === id, `id names another ${kind} than the one asked for`);
    },
  };
}

/** The states of a record's load on its node (LoadStatus); anything else would leave the viewer waiting. */
const LOAD_STATES = ["unloaded", "loading", "ready", "error"];

/**
 * A record's load status (LoadStatus): a known state, counts of frames ready out of its total,
 * and the frames that cannot be shown, each named by a frame of the total.
 * @param {any} status
 */
function loadStatus(status) {
  object(status, "the status");
  need(LOAD_STATES.includes(status.state), "state is none of " + LOAD_STATES.join(", "));
  count(status.frames_total, "frames_total");
  count(status.frames_ready, "frames_ready", status.frames_total);
  optional(status.errors, "errors", (errors, name) => listOf(errors, name, (error, field) => {
    object(error, field);
    need(Number.isInteger(error.frame) && error.frame >= 0 && error.frame < status.frames_total, `${field}.frame is no frame of the record`);
    text(error.message, `${field}.message`);
  }));
}

/** A record's load status (LoadStatus). @type {Shape} */
export const LOAD_STATUS = { asked: "the load status", check: loadStatus };

/**
 * An ROI's statistics (`…/stats`, daemons/render/imaging/probe.py): the pixels inside and, when
 * there are any, their mean, SD, minimum and maximum; the area in mm² where the pixel size is known.
 * The overlay writes them with toFixed on every redraw: a text there threw at each one.
 * @param {any} stats
 */
function roiStats(stats) {
  object(stats, "the statistics");
  count(stats.count, "count");
  optional(stats.unit, "unit", text);
  optional(stats.area_mm2, "area_mm2", notNegative);
  for (const key of ["mean", "sd", "min", "max"]) {
    if (stats.count > 0) finite(stats[key], key);
    else optional(stats[key], key, finite);
  }
}

/** An ROI's statistics. @type {Shape} */
export const ROI_STATS = { asked: "the statistics", check: roiStats };

/**
 * The node's presets (`api/v1/presets`): named windows `{name: {center, width, modality}}` and the
 * DVR presets' names. A null answer threw before the viewer was drawn; a window that is no object
 * threw when the window choices were filled.
 * @param {any} presets
 */
function presetsShape(presets) {
  object(presets, "the presets");
  object(presets.window, "window");
  for (const [name, window] of Object.entries(presets.window)) {
    windowShape(window, `window.${name}`);
    optional(window.modality, `window.${name}.modality`, text);
  }
  optional(presets.volume, "volume", (names, field) => listOf(names, field, text));
  optional(presets.volume_default, "volume_default", text);
}

/** The node's window and DVR presets. @type {Shape} */
export const PRESETS = { asked: "the presets", check: presetsShape };

/** A UUID as the servers write one (shared/validation.parse_uuid: canonical, lower case). */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** A record id as the servers write one (shared/validation.is_record_id: SHA-256 in hex). */
const RECORD_ID = /^[0-9a-f]{64}$/;

/** @param {any} value @param {string} name */
export function uuid(value, name) {
  need(typeof value === "string" && UUID.test(value), `${name} is no id`);
}

/** @param {any} value @param {string} name */
function recordId(value, name) {
  need(typeof value === "string" && RECORD_ID.test(value), `${name} is no record id`);
}

/**
 * A finding's link to a record (RecordLink, daemons/institution/findings.py LINK_FIELDS): the
 * record's id and institution, and its node where known. The form and the patient page take
 * `record_id.slice` of each and build the viewer's route and the unlink request from them.
 * @param {any} link @param {string} name
 */
function recordLink(link, name) {
  object(link, name);
  recordId(link.record_id, `${name}.record_id`);
  uuid(link.institution_id, `${name}.institution_id`);
  optional(link.node_id, `${name}.node_id`, uuid);
}

/** The texts of a Finding the form and the patient page show (docs/API.md). */
const FINDING_TEXTS = ["description", "findings", "conclusion", "recommendation", "date", "author_name"];

/**
 * A finding (Finding, docs/API.md), the answer itself (`name` "") or an item of a list: its texts
 * and the records it links (any number: links are added one by one, so the 200 of a new finding
 * bound nothing).
 * @param {any} finding @param {string} [name]
 */
function findingAnswer(finding, name = "") {
  object(finding, name || "the finding");
  uuid(finding.id, fieldOf(name, "id"));
  optional(finding.author_id, fieldOf(name, "author_id"), uuid);
  for (const key of [...FINDING_TEXTS, "created_at", "updated_at"]) optional(finding[key], fieldOf(name, key), text);
  optional(finding.changed, fieldOf(name, "changed"), bool);
  listOf(finding.records, fieldOf(name, "records"), recordLink);
}

/**
 * Finding `id`: an answer of `null` opened the edit form as a new finding (saving it wrote
 * another one), and one naming another finding would have had that one changed or deleted.
 * @param {string} id @returns {Shape}
 */
export function findingShape(id) {
  return answerAbout(id, "the finding", "finding", (body) => findingAnswer(body));
}

/** What ended a finding's version (FindingVersion.change, daemons/institution/finding_history.py). */
const FINDING_CHANGES = ["update", "link", "unlink", "delete"];

/**
 * The earlier texts of finding `id` (`api/v1/findings/{id}/versions`): each version's texts, links
 * and who replaced it by which change; the history view writes them out as they stood (a history of
 * another finding would have been shown as this one's). `before`: the page before that version was
 * asked for (`?before=`), so none of its versions may be that one or later.
 * @param {string} id @param {number | null} [before] @returns {Shape}
 */
export function findingVersionsShape(id, before = null) {
  return {
    asked: "the finding's history",
    check(body) {
      items(body);
      bool(body.deleted, "deleted");
      optional(body.current_version, "current_version", count);
      count(body.total, "total");
      need(body.items.length <= body.total, "items are more than the total");
      body.items.forEach((version, i) => {
        const name = `items[${i}]`;
        count(version.version, `${name}.version`);
        need(before === null || version.version < before, `${name}.version is not before version ${before}, the page asked for`);
        need(i === 0 || version.version > body.items[i - 1].version, `${name}.version is out of order`);
        uuid(version.patient_id, `${name}.patient_id`);
        uuid(version.changed_by_id, `${name}.changed_by_id`);
        for (const key of [...FINDING_TEXTS, "written_at", "changed_at", "changed_by_name"]) text(version[key], `${name}.${key}`);
        need(FINDING_CHANGES.includes(version.change), `${name}.change is no known change`);
        listOf(version.records, `${name}.records`, recordLink);
      });
      need(body.id === id, "id names another finding than the one asked for");
    },
  };
}

/** A record registered at an institution holds at most this many frames (daemons/institution/records.py). */
const REGISTERED_MAX_FRAMES = 1_000_000;

/**
 * An institution's entry of a record (Record, docs/API.md; daemons/institution/records.py), the
 * answer itself (`name` "") or an item of a list: its id, the patient it is registered for, the
 * nodes serving it, its size as registered and the labels the record's card shows.
 * @param {any} record @param {string} [name]
 */
function registeredRecord(record, name = "") {
  object(record, name || "the record");
  const field = (/** @type {string} */ key) => fieldOf(name, key);
  recordId(record.id, field("id"));
  uuid(record.patient_id, field("patient_id"));
  uuid(record.node_id, field("node_id"));
  optional(record.node_ids, field("node_ids"), (ids, list) => listOf(ids, list, uuid));
  count(record.rows, field("rows"), DICOM_MAX_SIDE);
  count(record.columns, field("columns"), DICOM_MAX_SIDE);
  count(record.frames, field("frames"), REGISTERED_MAX_FRAMES);
  for (const key of ["modality", "record_type", "description", "study_date"]) optional(record[key], field(key), text);
  optional(record.editable, field("editable"), bool);
}

/**
 * An institution's entry of record `id`: one naming another record would have been shown, edited
 * and deleted in this one's card.
 * @param {string} id @returns {Shape}
 */
export function registeredRecordShape(id) {
  return answerAbout(id, "the record's entry", "record", (body) => registeredRecord(body));
}

/**
 * Of the list asked for about patient `patientId` (`?patient_id=`), an item registered for another
 * patient would be shown, opened and cited on this patient's page.
 * @param {any} item @param {string} name @param {string} patientId
 */
function aboutPatient(item, name, patientId) {
  need(item.patient_id === patientId, `${name}.patient_id names another patient than the one asked for`);
}

/**
 * A page of an institution's findings of patient `patientId` (`api/v1/findings?patient_id=`): the
 * patient page drew each as a card, sorting them by date and shortening each link's record id; an
 * item `null`, a date that is a number or a link's id that is one threw there.
 * @param {string} patientId @returns {Shape}
 */
export function patientFindingsShape(patientId) {
  return pageOf("the patient's findings", (finding, name) => {
    findingAnswer(finding, name);
    aboutPatient(finding, name, patientId);
  });
}

/**
 * A page of an institution's records of patient `patientId` (`api/v1/records?patient_id=`): the
 * patient page, the finding form and the viewer's series panel list each, ask its node for it and
 * build the viewer's route from its ids.
 * @param {string} patientId @returns {Shape}
 */
export function patientRecordsShape(patientId) {
  return pageOf("the patient's records", (record, name) => {
    registeredRecord(record, name);
    aboutPatient(record, name, patientId);
  });
}

/**
 * A page of an institution's records of one study (`api/v1/records?study_uid=`): the work list
 * proposes the patient each names for the study's next series, and loads that patient by its id.
 * @type {Shape}
 */
export const STUDY_RECORDS = pageOf("the study's records", (record, name) => registeredRecord(record, name));

/** The hosts the servers take plain http from (shared/validation.is_loopback_host). */
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/**
 * The base URL of a SIVR server, as the servers keep one (shared/validation.parse_service_url):
 * https (http on loopback only), with a host and no user, password, query or fragment. The viewer
 * sends its requests there, with a token for that server.
 * @param {any} value @param {string} name
 */
export function serviceUrl(value, name) {
  text(value, name);
  let url = null;
  try { url = new URL(value); } catch { /* not a URL: refused below */ }
  need(url !== null && url.host !== "", `${name} is no URL`);
  need(url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK.test(url.hostname)), `${name} is no https URL`);
  need(!url.username && !url.password && !value.includes("?") && !value.includes("#"), `${name} is no server's base URL`);
}

/**
 * An institution's render node (Node, daemons/institution/nodes.py): the viewer asks it for the
 * record's images at `url`, names it, and tries the nodes `serving_node_ids` names in turn.
 * @param {any} node @param {string} name
 */
function nodeShape(node, name) {
  object(node, name);
  uuid(node.id, `${name}.id`);
  text(node.name, `${name}.name`);
  serviceUrl(node.url, `${name}.url`);
  optional(node.serving_node_ids, `${name}.serving_node_ids`, (ids, list) => listOf(ids, list, uuid));
}

/** A page of an institution's render nodes (`api/v1/nodes`). @type {Shape} */
export const NODES = pageOf("the render nodes", nodeShape);

/** The views a key image may be on, and the plane of RecordMeta.planes each counts in (daemons/render/api/key_images.py). */
const KEY_IMAGE_PLANES = { native: "slices", axial: "axial", coronal: "coronal", sagittal: "sagittal" };

/**
 * One key image (KeyImageRef, keyimages.js) as the node lets one be marked: a stored slice names
 * no stack; a reformat names one of the record's stacks (none: its first, as marks made before
 * they named one); its index is one of that view's images and its time point one of the image's.
 * The panel labels each and moves the viewport to it when clicked: an index beyond the view, an
 * unknown stack or time point moved it to another image than the one marked.
 * @param {any} item @param {string} name @param {{frames: number, planes: any, stacks: any[]}} record
 */
function keyImage(item, name, record) {
  object(item, name);
  need(typeof item.plane === "string" && Object.hasOwn(KEY_IMAGE_PLANES, item.plane), `${name}.plane is no view`);
  count(item.index, `${name}.index`);
  optional(item.stack, `${name}.stack`, text);
  optional(item.phase, `${name}.phase`, count);
  text(item.marked_by, `${name}.marked_by`);
  let stack = null;
  let images = record.frames;
  if (item.plane === "native") {
    need(item.stack == null, `${name}.stack is set on a stored slice`);
    stack = record.stacks.find((st) => st.phases.some((/** @type {number[]} */ phase) => phase.includes(item.index))) ?? null;
  } else {
    stack = item.stack == null ? record.stacks[0] ?? null : record.stacks.find((st) => st.id === item.stack);
    need(stack !== undefined, `${name}.stack is none of the record's stacks`);
    const planes = stack && stack.planes ? stack.planes : record.planes;
    const plane = planes ? planes[KEY_IMAGE_PLANES[item.plane]] : null;
    images = plane ? plane.count : 0;
  }
  need(item.index < images, `${name}.index is none of the ${images} images of its view`);
  const phases = stack ? stack.phases.length : 1;
  optional(item.phase, `${name}.phase`, (phase, field) => need(phase < phases, `${field} is none of the ${phases} time points of its image`));
}

/**
 * A record's key images (`…/key-images`, its listing `{items: [KeyImageRef & {marked_by}]}`), of the
 * record opened (series.js OpenRecord): its frame count, its own planes and its stacks, as checked
 * in its RecordMeta (`recordShape`).
 * @param {{frames: number, planes: any, stacks: any[]}} record @returns {Shape}
 */
export function keyImagesShape(record) {
  return {
    asked: "the key images",
    check(body) {
      items(body);
      body.items.forEach((item, i) => keyImage(item, `items[${i}]`, record));
    },
  };
}

/** A DICOM JSON attribute tag: 8 hex digits, group then element (PS3.18 F.2.1.1). */
const DICOM_TAG = /^[0-9A-Fa-f]{8}$/;

/**
 * One value of a DICOM JSON element that is no sequence (PS3.18 F.2.3): a string or a number, a
 * person name's component groups, or null (an empty value of several).
 * @param {any} value @param {string} name
 */
function dicomValue(value, name) {
  if (value === null || typeof value === "string" || typeof value === "number") return;
  object(value, name);
  for (const group of ["Alphabetic", "Ideographic", "Phonetic"]) optional(value[group], `${name}.${group}`, text);
}

/** The deepest a node can nest sequences: it reads them by recursion, and its interpreter allows
 *  1,000 calls at most (Python's limit; each level of nesting takes several). */
const MAX_SEQUENCE_DEPTH = 1000;

/**
 * One dataset of the DICOM JSON model (PS3.18 F.2): `{tag: {vr, Value?|BulkDataURI?|InlineBinary?}}`,
 * a sequence's items datasets again. The tag browser made a row of every element: an element
 * `null`, a Value that is no list or a sequence item that is text threw while the table was built.
 * @param {any} dataset @param {string} name @param {number} [depth] the sequences it lies in
 */
function dicomDataset(dataset, name, depth = 0) {
  need(depth <= MAX_SEQUENCE_DEPTH, `${name.slice(0, 40)}… lies in sequences nested too deeply (more than ${MAX_SEQUENCE_DEPTH})`);
  object(dataset, name);
  for (const [tag, element] of Object.entries(dataset)) {
    const field = `${name}.${tag}`;
    need(DICOM_TAG.test(tag), `${name} names ${JSON.stringify(tag.slice(0, 20))}, no tag`);
    object(element, field);
    text(element.vr, `${field}.vr`);   // two letters, or pydicom's unresolved "US or SS", "OB or OW"
    optional(element.BulkDataURI, `${field}.BulkDataURI`, text);
    optional(element.InlineBinary, `${field}.InlineBinary`, text);
    optional(element.Value, `${field}.Value`, (values, list) =>
      listOf(values, list, element.vr === "SQ" ? (item, itemName) => dicomDataset(item, itemName, depth + 1) : dicomValue));
  }
}

/**
 * An instance's metadata (WADO-RS `…/metadata`, daemons/render/dicomweb/metadata.py): a list of
 * DICOM JSON datasets, the instance's first. Its size is bounded by MAX_JSON_BYTES as it is read,
 * its nesting by what JSON.parse reads (api.js parseText).
 * @type {Shape}
 */
export const DICOM_METADATA = {
  asked: "the instance's DICOM attributes",
  check(body) {
    listOf(body, "the answer", dicomDataset);
    need(body.length > 0, "the answer names no instance");
  },
};

/**
 * An institution server's `api/v1/info` (daemons/institution/info.py): its id, name and the
 * IssuerOfPatientID of the work list's matching rule ("" when none). An answer of `null` threw
 * before the work list was drawn; an issuer that is no text went into the matching rule.
 * @type {Shape}
 */
export const INSTITUTION_INFO = {
  asked: "the institution's information",
  check(info) {
    object(info, "the information");
    uuid(info.institution_id, "institution_id");
    optional(info.name, "name", text);
    optional(info.issuer_of_patient_id, "issuer_of_patient_id", text);
  },
};

/**
 * A node's upload receipt for a series (`POST …/receipt`): `{receipt}`, the signed text the
 * institution registers the series with. Anything else was sent on to the institution, whose
 * refusal blamed the registration, not the node. Its length is not bounded here: the institution
 * refuses one too long itself, saying which patient data made it so (shared/receipts.py).
 * @type {Shape}
 */
export const RECEIPT = {
  asked: "the upload receipt",
  check(body) {
    object(body, "the answer");
    text(body.receipt, "receipt");
    need(body.receipt !== "", "receipt is empty");
  },
};

// The institution's and the nodes' answers read by the work list, the value probe and the upload.

/** @param {any} value @param {string} name @param {string[]} keys texts, each null where unknown */
function texts(value, name, keys) {
  object(value, name);
  for (const key of keys) optional(value[key], `${name}.${key}`, text);
}

/**
 * A series waiting on a node's work list (WorklistItem, docs/API.md): its record id, size and
 * DICOM patient, study and series, all of which the item shows and the registration sends on.
 * @param {any} item @param {string} name
 */
function worklistItem(item, name) {
  object(item, name);
  recordId(item.id, `${name}.id`);
  count(item.rows, `${name}.rows`, DICOM_MAX_SIDE);
  count(item.columns, `${name}.columns`, DICOM_MAX_SIDE);
  count(item.frames, `${name}.frames`);
  optional(item.modality, `${name}.modality`, text);
  texts(item.patient, `${name}.patient`, ["name", "patient_id", "issuer", "birth_date", "sex"]);
  texts(item.study, `${name}.study`, ["study_uid", "date", "description", "accession_number"]);
  texts(item.series, `${name}.series`, ["series_uid", "modality", "description"]);
  count(item.series.count, `${name}.series.count`);
}

/**
 * A page of a node's work list (`GET api/v1/worklist`): an item whose study was `null` threw
 * while the list was drawn, one whose id was no record id was registered under it.
 * @type {Shape}
 */
export const WORKLIST_PAGE = {
  asked: "the work list",
  check(body) {
    LIST_PAGE.check(body);
    body.items.forEach((item, i) => worklistItem(item, `items[${i}]`));
  },
};

/**
 * The value under pixel (`x`, `y`) (`…/value`, daemons/render/imaging/probe.py): its modality
 * value, stored value and unit, read at the pixel asked for. A value that was text was shown as
 * "no value", one of 1e400 as "Infinity HU", another pixel's as this one's.
 * @param {number} x @param {number} y @returns {Shape}
 */
export function valueShape(x, y) {
  return {
    asked: "the value",
    check(reading) {
      object(reading, "the value");
      need(reading.x === x && reading.y === y, "x, y name another pixel than the one asked for");
      finite(reading.value, "value");
      optional(reading.stored, "stored", finite);
      optional(reading.unit, "unit", text);
    },
  };
}
