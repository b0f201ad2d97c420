// Whose images are these, before they are uploaded for a SIVR patient (issue 11)? The patient the
// chosen files name (read from the first file's header, dicom_header.js) is compared with the SIVR
// patient by the viewer's one rule (identity.js comparePatients). When the name or birth date differs,
// a dialog shows both patients side by side and nothing is sent until the physician confirms
// ("upload anyway for ...") or cancels. The decision goes with the registration (`identity`), where
// the institution checks it against the node's signed statement of the DICOM patient and audits it
// (daemons/institution/reconciliation.py): a client that skips this dialog is refused there.

import { h, formatDate } from "./dom.js";
import { patientName, sexLabel } from "./patients.js";
import { comparePatients, isoDate, readableName } from "./identity.js";
import { readDicomPatient } from "./dicom_header.js";

export const MATCH = "match";
export const CONFIRMED_MISMATCH = "confirmed_mismatch";

/**
 * The DICOM patient of the chosen files and how it compares with `patient`: {dicom, differs, unknown},
 * or null when the browser cannot read it (the institution still compares after the upload).
 * A series names one patient; its first file stands for it.
 */
export async function checkFiles(patient, files) {
  const dicom = await readDicomPatient(files[0]);
  return dicom ? withComparison(patient, dicom) : null;
}

/** `dicom` ({name, patient_id, issuer, birth_date, sex}) compared with the SIVR `patient`. */
export function withComparison(patient, dicom) {
  return { dicom, ...comparePatients(patient, { patient_name: dicom.name, patient_birth_date: dicom.birth_date }) };
}

/** The `identity` a registration carries: the decision and the DICOM patient the physician was shown. */
export function identityClaim(decision, dicom) {
  const cut = (value, n) => String(value || "").slice(0, n);
  return { decision, dicom_patient: { name: cut(dicom.name, 200), patient_id: cut(dicom.patient_id, 64),
    issuer: cut(dicom.issuer, 64), birth_date: cut(dicom.birth_date, 8), sex: cut(dicom.sex, 16) } };
}

/** Both patients side by side, row by row; the rows that differ marked. */
function comparisonTable(patient, check) {
  const { dicom, differs } = check;
  const rows = [
    ["Name", "name", patientName(patient), readableName(dicom.name) || "no name"],
    ["Birth date", "birth date", formatDate(patient.birth_date), isoDate(dicom.birth_date) ? formatDate(isoDate(dicom.birth_date)) : "none"],
    ["ID", null, `ins. no. ${patient.insurance_number}`, dicom.patient_id ? `${dicom.patient_id}${dicom.issuer ? ` (${dicom.issuer})` : ""}` : "none"],
    ["Sex", null, sexLabel(patient.sex), dicom.sex ? sexLabel(dicom.sex) : "none"],
  ];
  return h("table", { class: "identity-compare" },
    h("thead", {}, h("tr", {}, h("th", {}), h("th", { scope: "col", text: "SIVR patient (this upload)" }),
      h("th", { scope: "col", text: "In the images (DICOM)" }))),
    h("tbody", {}, rows.map(([label, rule, sivr, image]) => {
      const differ = rule !== null && differs.includes(rule);
      return h("tr", { class: differ ? "identity-differs" : "" },
        h("th", { scope: "row", text: differ ? `≠ ${label}` : label }),
        h("td", { class: "identity-compare-sivr", text: sivr }), h("td", { class: "identity-compare-dicom", text: image }));
    })));
}

/**
 * Ask before anything is sent: a modal dialog with both patients; resolves true for
 * "upload anyway for <patient>", false for Cancel, Escape, or leaving the page (`signal`).
 * @param {any} patient
 * @param {{dicom: any, differs: string[], unknown: string[]}} check
 * @param {string} action
 * @param {AbortSignal} [signal]
 * @returns {Promise<boolean>}
 */
export function confirmMismatch(patient, check, action, signal) {
  const what = check.differs.join(" and ");
  // nothing differs, yet the institution asks: the images name no patient to compare (its 409 `identity_unconfirmed`)
  const named = check.differs.length > 0;
  const dialog = h("dialog", { class: "identity-dialog", id: "identity-confirm", "aria-labelledby": "identity-confirm-title" },
    h("h2", { id: "identity-confirm-title", text: named ? "⚠ The images name another patient" : "⚠ The images name no patient" }),
    h("p", { text: named ? `The ${what} in the files differ${check.differs.length === 1 ? "s" : ""} from ${patientName(patient)}'s.`
      : `The files carry no patient ${check.unknown.join(" or ")} to compare with ${patientName(patient)}'s: they may be anyone's.` }),
    comparisonTable(patient, check),
    named && check.unknown.length ? h("p", { class: "muted", text: `The images carry no patient ${check.unknown.join(" or ")}.` }) : null,
    h("p", { text: `Go on only if you are sure these images are ${patientName(patient)}'s. Your decision is recorded with your name.` }));
  return new Promise((resolve) => {
    const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    dialog.append(h("div", { class: "actions" },
      h("button", { type: "button", class: "btn btn-danger", id: "identity-confirm-yes", text: `${action} for ${patientName(patient)}`, onclick: () => done(true) }),
      h("button", { type: "button", class: "btn", id: "identity-confirm-no", text: "Cancel", onclick: () => done(false) })));
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(false); });
    if (signal) signal.addEventListener("abort", () => { if (dialog.isConnected) done(false); });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector("#identity-confirm-no").focus();
  });
}
