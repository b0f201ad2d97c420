// Whose images are these? The SIVR patient whose page the viewer was opened from, beside the
// patient the DICOM files name (issue 15 item 2). When their names or birth dates differ the
// viewer shows a warning banner above the image and a red line in its overlay: a series
// registered under the wrong patient must never be read as if it were theirs.

import { h, formatDate } from "./dom.js";
import { patientName } from "./patients.js";
import { apiPath, labelText } from "./api.js";
import { INSTITUTION_TIMEOUT_MS } from "./federation.js";
import { registeredRecordShape } from "./answers.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Letters and digits only, lower case, accents dropped: "Müller-Lüdenscheidt" ~ "MULLER LUDENSCHEIDT".
 * U+FFFD (and NUL or a lone surrogate, which an older node sent in its place) is kept as a letter that
 * equals no other: a character of the file that could not be kept ("DOE\uFFFD" may be "DOEN").
 */
function folded(text) {
  return String(text || "").normalize("NFD").replace(/\p{M}/gu, "").toLowerCase()
    .replace(/[^\p{L}\p{N}\uFFFD\u0000\uD800-\uDFFF]+/gu, " ").trim();
}

/** A DICOM person name (PS3.5 6.2: family^given^middle^prefix^suffix, first of its "=" groups). */
export function dicomPersonName(value) {
  const [family = "", given = "", middle = ""] = String(value || "").split("=")[0].split("^");
  return { family: family.trim(), given: [given, middle].map((p) => p.trim()).filter(Boolean).join(" ") };
}

/** "DOE^JANE" as people write it: "DOE, JANE" (a label: `labelText`). */
export function readableName(value) {
  const { family, given } = dicomPersonName(value);
  return labelText([family, given].filter(Boolean).join(", "));
}

/** DICOM DA (YYYYMMDD) as ISO, or null. */
export function isoDate(value) {
  const m = String(value || "").match(/^(\d{4})-?(\d{2})-?(\d{2})$/);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : null;
}

/** Same person by name: same family name and the same first given name (middle names may be
 *  missing on either side); a name without "^" is compared whole, in either order. */
function sameName(patient, dicomName) {
  const { family, given } = dicomPersonName(dicomName);
  const last = folded(patient.last_name);
  const first = folded(patient.first_name).split(" ")[0];
  if (!given) {
    const whole = folded(family);
    return whole === `${last} ${folded(patient.first_name)}` || whole === `${folded(patient.first_name)} ${last}`;
  }
  return folded(family) === last && folded(given).split(" ")[0] === first;
}

/**
 * Compare the SIVR patient with the patient of the record's files.
 * Returns {differs: ["name", "birth date"], unknown: [...]}: what differs, and what the files lack.
 */
export function comparePatients(patient, meta) {
  const differs = [];
  const unknown = [];
  if (!String(meta.patient_name || "").replace(/\^/g, "").trim()) unknown.push("name");
  else if (!sameName(patient, meta.patient_name)) differs.push("name");
  const born = isoDate(meta.patient_birth_date);
  if (!born) unknown.push("birth date");
  else if (born !== patient.birth_date) differs.push("birth date");
  return { differs, unknown };
}

/**
 * The SIVR patient of the page the viewer was opened from (`?patient=`), else the one the
 * institution registered the record for; with the comparison against the files' patient.
 * Opened from a page, the record's registration is read too (beside the page's patient, not after
 * it): a link that pairs a page with another patient's record (a finding citing the wrong record,
 * or a hand-made link) is a mismatch even when both patients' names and birth dates agree.
 * Never throws: a patient that cannot be loaded is shown as such, with the reason.
 */
export async function patientIdentity(ctx, institutionId, nodeId, recordId, meta, query) {
  const dicom = dicomPatient(meta);
  try {
    const pagePatient = query.get("patient");
    const fromPage = Boolean(pagePatient) && UUID.test(pagePatient);
    const inst = await ctx.dir.institution(institutionId);
    // bounded: a viewer opened from a page waits for this before it shows the image. Another
    // record's entry would vouch for this one's patient (answers.js).
    const registration = ctx.session.fetchJson(inst.server_url, apiPath`api/v1/records/${recordId}`,
      { params: { node_id: nodeId }, signal: AbortSignal.timeout(INSTITUTION_TIMEOUT_MS), shape: registeredRecordShape(recordId) });
    if (!fromPage) {
      const patient = await ctx.session.toplevel(apiPath`api/v1/patients/${(await registration).patient_id}`);
      return identityOf(patient, false, meta);
    }
    const [patient, registered] = await Promise.all([
      ctx.session.toplevel(apiPath`api/v1/patients/${pagePatient}`),
      registration.then((record) => record.patient_id, (err) => ctx.describeError(err)),
    ]);
    const checked = UUID.test(registered)
      ? { registeredElsewhere: registered !== pagePatient, registrationUnchecked: null }
      : { registeredElsewhere: false, registrationUnchecked: registered };
    return { ...identityOf(patient, true, meta), ...checked };
  } catch (err) {
    return { patient: null, error: ctx.describeError(err), dicom, differs: [], unknown: [] };
  }
}

/** Whether the viewer must warn: the files name another patient, or the record is registered for one. */
export function isMismatch(identity) {
  return identity.differs.length > 0 || Boolean(identity.registeredElsewhere);
}

/** The patient a record's files name. */
function dicomPatient(meta) {
  return { name: meta.patient_name || "", id: labelText(meta.patient_id_dicom || ""), birthDate: isoDate(meta.patient_birth_date) };
}

/**
 * The identity of a record (`meta`) shown for the SIVR `patient`: another series of the same
 * patient opened in the viewer (series panel, priors) is compared with that patient in turn.
 */
export function identityOf(patient, fromPage, meta) {
  return { patient, fromPage, dicom: dicomPatient(meta), ...comparePatients(patient, meta) };
}

function dicomLine(dicom) {
  return [readableName(dicom.name) || "no name", dicom.id ? `ID ${dicom.id}` : null,
    dicom.birthDate ? `born ${formatDate(dicom.birthDate)}` : "no birth date"].filter(Boolean).join(" · ");
}

function sivrLine(patient) {
  return `${patientName(patient)} · born ${formatDate(patient.birth_date)} · ins. no. ${labelText(patient.insurance_number)}`;
}

/** The two patients side by side above the image; a warning banner (role "alert") when they differ. */
export function identityPanel(identity) {
  const rows = h("dl", { class: "identity-rows" },
    h("dt", { text: identity.fromPage ? "Patient page" : "SIVR patient" }),
    h("dd", { id: "identity-sivr", text: identity.patient ? sivrLine(identity.patient) : `could not be loaded: ${identity.error}` }),
    h("dt", { text: "In the images (DICOM)" }),
    h("dd", { id: "identity-dicom", text: dicomLine(identity.dicom) }));
  const unchecked = identity.registrationUnchecked
    ? h("p", { class: "warn", id: "identity-unchecked", text: `Whose record this is could not be checked at its institution (${identity.registrationUnchecked}): compare the images with the patient yourself.` })
    : null;
  if (!isMismatch(identity)) {
    return h("div", { class: `identity${identity.patient ? "" : " identity-unknown"}`, id: "patient-identity" }, rows,
      identity.unknown.length ? h("p", { class: "muted", text: `The images carry no patient ${identity.unknown.join(" or ")}: compare the images with the patient yourself.` }) : null,
      unchecked);
  }
  const what = identity.differs.join(" and ");
  const title = identity.registeredElsewhere
    ? "⚠ Patient mismatch: this record is registered for another patient than the page it was opened from."
    : `⚠ Patient mismatch: the images name another patient (${what} differ${identity.differs.length === 1 ? "s" : ""}).`;
  return h("div", { class: "identity identity-mismatch", id: "patient-identity", role: "alert" },
    h("p", { class: "identity-title", id: "identity-warning", text: title }),
    rows,
    h("p", { text: `Do not read or report these images for ${patientName(identity.patient)} before the record's patient is checked; its uploader or an administrator can correct or delete it from the patient page.` }),
    unchecked);
}

/** The overlay's first lines (top left of the image): both patients, and a red line when they differ. */
export function identityLines(identity) {
  const dicom = identity.dicom;
  return [
    isMismatch(identity) ? h("div", { class: "overlay-mismatch", id: "overlay-mismatch", text: "⚠ PATIENT MISMATCH" }) : null,
    identity.patient ? h("div", { id: "overlay-sivr", text: `SIVR: ${patientName(identity.patient)} · ${identity.patient.birth_date || "?"}` }) : null,
    h("div", { id: "overlay-dicom", text: `DICOM: ${readableName(dicom.name) || "—"}${dicom.id ? ` · ${dicom.id}` : ""} · ${dicom.birthDate || "?"}` }),
  ];
}
