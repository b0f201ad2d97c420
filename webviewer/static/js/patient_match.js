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

import { comparePatients } from "./identity.js";
import { PATIENT_LIST } from "./answers_toplevel.js";

/**
 * @typedef {{name: string, patient_id: string, issuer: string, birth_date: string, sex: string}} DicomPatient
 * @typedef {{id: string, first_name: string, last_name: string, birth_date: string, insurance_number: string}} SivrPatient
 * @typedef {{kind: "match", patient: SivrPatient} | {kind: "choose", reason: string, candidates: SivrPatient[]}} Proposal
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
 * Apply the rule: look the key up at the toplevel (exact insurance number), then judge.
 * @param {any} ctx
 * @param {DicomPatient} dicom
 * @param {string} issuer
 * @param {AbortSignal} [signal]
 * @returns {Promise<Proposal>}
 */
export async function propose(ctx, dicom, issuer, signal) {
  const key = ruleKey(dicom, issuer);
  if (!("number" in key)) return { kind: "choose", reason: key.reason, candidates: [] };
  const page = await ctx.session.toplevel("api/v1/patients", { params: { insurance_number: key.number, limit: 10 }, signal, shape: PATIENT_LIST });
  return judge(dicom, page.items);
}
