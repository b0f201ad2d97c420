// The matching rule of the work list (issue 11): which SIVR patient a series' DICOM patient is.
// It is defined here, once, because identity is decided in the physician's browser: the render
// node knows the DICOM patient, the toplevel knows the SIVR patients, and backends never call each
// other (docs/architecture.md, "Where patient identity is decided").
//
// The rule: the DICOM PatientID (0010,0020) is looked up as a SIVR insurance number; when the
// institution configures an issuer (`identity.issuer_of_patient_id`, shown at its /api/v1/info)
// the series' IssuerOfPatientID (0010,0021) must be that issuer too. Exactly one SIVR patient
// found, whose name and birth date agree with the DICOM ones (identity.js comparePatients), is a
// proposal that one click confirms; anything else (no PatientID, another issuer, no patient,
// several, a name or birth date that differs or is missing) makes the physician choose.
// Nothing is ever attached without that click.
//
// Before that rule comes the study's: a study is one patient's, and the institution refuses a
// series of a study filed there to another patient (409 study_of_another_patient). A series whose
// study has series filed at the institution (`api/v1/records?study_uid=`) is proposed for that
// patient only, as a PACS attaches a study's next series (`studyFiling`, `judgeStudy`).

import { comparePatients } from "./identity.js";
import { apiPath } from "./api.js";
import { STUDY_RECORDS } from "./answers.js";
import { PATIENT_LIST, patientAbout } from "./answers_toplevel.js";

/**
 * @typedef {{name: string, patient_id: string, issuer: string, birth_date: string, sex: string}} DicomPatient
 * @typedef {{id: string, first_name: string, last_name: string, birth_date: string, insurance_number: string}} SivrPatient
 * @typedef {{kind: "match", patient: SivrPatient} | {kind: "choose", reason: string, candidates: SivrPatient[]}
 *   | {kind: "study", patient: SivrPatient, differs: string[], unknown: string[]}
 *   | {kind: "filed_elsewhere", filed: Filing[]}} Proposal
 * @typedef {{id: string, patient: SivrPatient | null, error: string}} Filing a patient a study is filed to
 *   (`patient` null with the reason when the toplevel did not answer it)
 */

/**
 * The insurance number the rule looks up for a DICOM patient, or the reason there is none.
 * @param {DicomPatient} dicom
 * @param {string} issuer the institution's configured IssuerOfPatientID ("" when none)
 * @returns {{number: string} | {reason: string}}
 */
export function ruleKey(dicom, issuer) {
  const number = String(dicom.patient_id || "").trim();
  if (!number) return { reason: "The images carry no PatientID." };
  if (issuer && String(dicom.issuer || "").trim() !== issuer) {
    return { reason: `The PatientID is issued by “${dicom.issuer || "no issuer"}”, not by ${issuer}, whose numbers are the insurance numbers.` };
  }
  return { number };
}

/**
 * The rule's outcome for the SIVR patients whose insurance number is the key.
 * @param {DicomPatient} dicom
 * @param {SivrPatient[]} found
 * @returns {Proposal}
 */
export function judge(dicom, found) {
  if (found.length === 0) return { kind: "choose", reason: "No SIVR patient has this PatientID as insurance number.", candidates: [] };
  if (found.length > 1) return { kind: "choose", reason: "Several SIVR patients have this insurance number.", candidates: found };
  const { differs, unknown } = comparePatients(found[0], { patient_name: dicom.name, patient_birth_date: dicom.birth_date });
  if (differs.length) return { kind: "choose", reason: `The insurance number matches, but the ${differs.join(" and ")} differ${differs.length === 1 ? "s" : ""}.`, candidates: found };
  if (unknown.length) return { kind: "choose", reason: `The insurance number matches, but the images carry no ${unknown.join(" or ")} to confirm it.`, candidates: found };
  return { kind: "match", patient: found[0] };
}

/**
 * The patients study `studyUid` is filed to at the institution (`serverUrl`), each loaded from the
 * toplevel; [] when none of its series is filed there. One request for the study, whatever number of
 * its series the work list shows.
 * @param {any} ctx
 * @param {string} serverUrl
 * @param {string} studyUid
 * @param {AbortSignal} [signal]
 * @returns {Promise<Filing[]>}
 */
export async function studyFiling(ctx, serverUrl, studyUid, signal) {
  const page = await ctx.session.fetchJson(serverUrl, "api/v1/records", { params: { study_uid: studyUid, limit: 100 }, signal, shape: STUDY_RECORDS });
  const ids = [...new Set(page.items.map((record) => record.patient_id))];
  return Promise.all(ids.map((id) => ctx.session.toplevel(apiPath`api/v1/patients/${id}`, { signal, shape: patientAbout(id) })
    .then((patient) => ({ id, patient, error: "" }), (err) => {
      if (err.name === "AbortError") throw err;
      return { id, patient: null, error: ctx.describeError(err) };
    })));
}

/**
 * The study's rule: filed to one patient (loaded), that patient, with what the images' patient
 * disagrees in (which makes the physician's click a choice, "chosen", rather than the rule's):
 * the name, the birth date and, where the institution declares its PatientIDs insurance numbers
 * (an `issuer` configured, and the images' PatientID of that issuer: ruleKey), a PatientID that is
 * not this patient's insurance number. Without that, a series whose PatientID was another patient's
 * insurance number, name and birth date alike (twins, a namesake), was proposed for the study's
 * patient as agreeing. Filed to several, or to one the toplevel did not answer, no patient the
 * institution would take that the work list can offer. Nothing filed: null, and the DICOM patient
 * rule decides.
 * @param {DicomPatient} dicom
 * @param {Filing[]} filed
 * @param {string} [issuer] the institution's configured IssuerOfPatientID ("" when none)
 * @returns {Proposal | null}
 */
export function judgeStudy(dicom, filed, issuer = "") {
  if (!filed.length) return null;
  const patient = filed.length === 1 ? filed[0].patient : null;
  if (!patient) return { kind: "filed_elsewhere", filed };
  const { differs, unknown } = comparePatients(patient, { patient_name: dicom.name, patient_birth_date: dicom.birth_date });
  const key = issuer ? ruleKey(dicom, issuer) : null;
  if (key && "number" in key && key.number !== String(patient.insurance_number || "").trim()) differs.unshift("PatientID");
  return { kind: "study", patient, differs, unknown };
}

/**
 * Apply the rules: the study's (`filed`, from `studyFiling`; [] when none is filed or the series
 * names no study), else look the key up at the toplevel (exact insurance number), then judge.
 * @param {any} ctx
 * @param {DicomPatient} dicom
 * @param {string} issuer
 * @param {AbortSignal} [signal]
 * @param {Filing[]} [filed]
 * @returns {Promise<Proposal>}
 */
export async function propose(ctx, dicom, issuer, signal, filed = []) {
  const byStudy = judgeStudy(dicom, filed, issuer);
  if (byStudy) return byStudy;
  const key = ruleKey(dicom, issuer);
  if (!("number" in key)) return { kind: "choose", reason: key.reason, candidates: [] };
  const page = await ctx.session.toplevel("api/v1/patients", { params: { insurance_number: key.number, limit: 10 }, signal, shape: PATIENT_LIST });
  return judge(dicom, page.items);
}
