// Asking every institution server at once. Each answer is handed on as it arrives, so a slow or
// dead institution never holds back the others; a per-server timeout turns silence into a
// visible "did not answer" instead of an endless spinner.

import { labelText, listAll } from "./api.js";
import { patientRecordsShape } from "./answers.js";
import { formatDate } from "./dom.js";

export const INSTITUTION_TIMEOUT_MS = 8000;

/**
 * Call `path` (a list endpoint) on every institution server concurrently, each page of its answer
 * checked against `shape` (answers.js `pageOf`).
 * `onResult(institution, {items} | {error})` runs once per institution, in arrival order.
 * Resolves when all have answered or failed.
 */
export async function queryAllInstitutions(ctx, path, params, shape, onResult, signal) {
  const institutions = await ctx.dir.institutions();
  await Promise.all(institutions.map(async (inst) => {
    const timeout = AbortSignal.timeout(INSTITUTION_TIMEOUT_MS);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      const items = await listAll(ctx.session, inst.server_url, path, params, { signal: combined, shape });
      if (!signal || !signal.aborted) onResult(inst, { items });
    } catch (error) {
      if (signal && signal.aborted) return;
      onResult(inst, { error });
    }
  }));
  return institutions;
}

/** All records of a patient, from every institution that answers: [{institution, record}]. */
export async function patientRecords(ctx, patientId, signal) {
  const found = [];
  const failed = [];
  await queryAllInstitutions(ctx, "api/v1/records", { patient_id: patientId }, patientRecordsShape(patientId), (inst, result) => {
    if (result.error) failed.push({ institution: inst, error: result.error });
    else for (const record of result.items) found.push({ institution: inst, record });
  }, signal);
  return { found, failed };
}

/** The one key of a record at an institution: a finding's link to it, and the patient page's labels. */
export function linkKey(link) {
  return `${link.institution_id}/${link.record_id}`;
}

export function recordLabel(record) {
  const parts = [record.record_type || record.modality, record.description, formatDate(record.study_date)].filter(Boolean);
  return labelText(parts.join(" · ") || record.id.slice(0, 12));
}

/** The viewer's route. `patientId` names the SIVR patient whose page the record is opened from: the
 *  viewer shows that patient beside the one the images name, and warns when they differ. */
export function viewerHref(institutionId, nodeId, recordId, patientId) {
  const path = `#/view/${institutionId}/${nodeId}/${recordId}`;
  return patientId ? `${path}?patient=${patientId}` : path;
}
