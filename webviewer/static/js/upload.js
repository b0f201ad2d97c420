// Uploading DICOM files (or a whole folder) to a render node of the physician's institution,
// with a progress bar, per-file errors in words, and the record then registered at the
// institution server so that it appears on the patient's page. Each upload is bound to the
// values of the form when it was submitted (issue 15 item 1: a series once got another's label).
// Before anything is sent, the patient the files name is compared with this SIVR patient; when they
// differ the physician confirms or cancels in a dialog, and the decision goes with the registration
// (upload_identity.js, issue 11).

import { h, mount, field, select, formatBytes } from "./dom.js";
import { errorFromResponse, buildUrl, ApiError, apiPath, parseJson } from "./api.js";
import { patientName, patientReference } from "./patients.js";
import { recordLabel, viewerHref } from "./federation.js";
import { checkFiles, confirmMismatch, identityClaim, withComparison, CONFIRMED_MISMATCH, MATCH } from "./upload_identity.js";
import { registeredRecordShape } from "./answers.js";
import { patientAbout } from "./answers_toplevel.js";

/**
 * Part 10 files carry "DICM" at byte 128. Checking those four bytes lets us name a wrong file
 * (a PDF, a report, a DICOMDIR's text companion) before sending hundreds of megabytes; the render
 * node still validates everything itself.
 */
async function looksLikeDicom(file) {
  if (file.size < 132) return false;
  const bytes = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  return bytes[0] === 0x44 && bytes[1] === 0x49 && bytes[2] === 0x43 && bytes[3] === 0x4d;
}

/** The record type whose code is the file's modality (CT, MR, ...), else the modality itself. */
export function recordTypeFor(types, modality) {
  const found = types.find((t) => t.code.toUpperCase() === String(modality || "").toUpperCase());
  return found ? found.code : (modality || "");
}

export function isoDate(value) {
  if (!value) return null;
  const m = String(value).match(/^(\d{4})-?(\d{2})-?(\d{2})$/);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : null;
}

/** POST the files with XMLHttpRequest, the one browser API that reports upload progress. */
function sendFiles(url, token, files, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const form = new FormData();
    for (const file of files) form.append("files", file, file.webkitRelativePath || file.name);
    xhr.open("POST", url);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.responseType = "blob";
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
    xhr.addEventListener("load", async () => {
      const response = new Response(xhr.response, {
        status: xhr.status, statusText: xhr.statusText,
        headers: { "Content-Type": xhr.getResponseHeader("Content-Type") || "", "Retry-After": xhr.getResponseHeader("Retry-After") || "" },
      });
      if (xhr.status >= 200 && xhr.status < 300) resolve(await parseJson(response));
      else reject(await errorFromResponse(response));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "unreachable", "the render node could not be reached; the upload did not happen")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the upload was cancelled")));
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    xhr.send(form);
  });
}

export async function uploadView(ctx, patientId) {
  const ownInst = await ctx.dir.ownInstitution();
  const [patient, nodes, types] = await Promise.all([
    ctx.session.toplevel(apiPath`api/v1/patients/${patientId}`, { shape: patientAbout(patientId) }),
    ctx.dir.nodes(ownInst.id),
    ctx.dir.recordTypes(),
  ]);
  const controller = new AbortController();
  const back = `#/patients/${patient.id}`;

  const filesInput = h("input", { type: "file", name: "files", multiple: true, accept: ".dcm,application/dicom,*/*" });
  const folderInput = h("input", { type: "file", name: "folder", webkitdirectory: true, multiple: true });
  const nodeSelect = select("node", nodes.map((n) => [n.id, n.name]));
  const typeSelect = select("record_type", [["", "From the file's modality"], ...types.map((t) => [t.code, `${t.code} — ${t.name}`])]);
  const description = h("input", { name: "description", maxlength: 200, placeholder: "e.g. CT abdomen with contrast" });
  const chosen = h("div", { class: "file-list", id: "file-list", "aria-live": "polite" });
  const result = h("div", { class: "upload-result", id: "upload-result" });
  const jobs = h("ol", { class: "upload-jobs", id: "upload-jobs", "aria-label": "Uploads" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", text: "Upload" });
  let files = [];
  let rejected = [];
  let jobCount = 0;

  async function pick(list) {
    const all = [...list].filter((f) => !f.name.startsWith("."));
    const checks = await Promise.all(all.map(looksLikeDicom));
    files = all.filter((_, i) => checks[i]);
    rejected = all.filter((_, i) => !checks[i]);
    const total = files.reduce((s, f) => s + f.size, 0);
    mount(chosen,
      h("p", { text: files.length ? `${files.length} DICOM file${files.length === 1 ? "" : "s"} chosen (${formatBytes(total)}).` : "No DICOM file chosen." }),
      rejected.length ? h("div", { class: "warn" },
        h("p", { text: `${rejected.length} file${rejected.length === 1 ? " is" : "s are"} not DICOM and will not be uploaded:` }),
        h("ul", { class: "problems" }, rejected.map((f) => h("li", {},
          h("span", { class: "mono", text: f.webkitRelativePath || f.name }), ": not a DICOM file (no “DICM” marker)")))) : null);
  }
  filesInput.addEventListener("change", () => { folderInput.value = ""; pick(filesInput.files); });
  folderInput.addEventListener("change", () => { filesInput.value = ""; pick(folderInput.files); });

  /** Ready for the next series: nothing typed for one upload can stick to the next. */
  function resetForm() {
    filesInput.value = "";
    folderInput.value = "";
    files = [];
    rejected = [];
    chosen.replaceChildren();
    typeSelect.value = "";
    description.value = "";
  }

  const form = h("form", { class: "panel form-grid", novalidate: true },
    field("DICOM files", filesInput, "One multi-frame file or the single-frame files of one series."),
    field("…or a whole folder", folderInput),
    h("div", { class: "span-2" }, chosen),
    field("Render node", nodeSelect), field("Record type", typeSelect),
    h("div", { class: "span-2" }, field("Description", description,
      "Bound to this upload when you press Upload; the form is then free for the next series.")),
    h("div", { class: "span-2" }, result),
    h("div", { class: "actions span-2" }, submit, h("a", { class: "btn btn-quiet", href: back, text: "Back to patient" })));

  // Everything the record is registered with is taken from the form now, at submission, and the
  // form is cleared: a description typed while this upload runs belongs to the next one.
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren();
    if (!nodes.length) return showFormError("Your institution has no render node registered; ask an administrator.");
    if (!files.length) return showFormError(rejected.length
      ? "None of the chosen files is a DICOM file." : "Choose DICOM files or a folder first.");
    const job = {
      number: ++jobCount,
      files: [...files],
      node: nodes.find((n) => n.id === nodeSelect.value),
      recordType: typeSelect.value,
      description: description.value.trim(),
    };
    submit.disabled = true;
    try {
      job.identity = await identityFor(job.files);
    } catch (err) {
      return showFormError(`Not uploaded: ${ctx.describeError(err)}`);
    } finally {
      submit.disabled = false;
    }
    if (job.identity === null) {
      return showFormError(`Not uploaded: the images name another patient than ${patientName(patient)}. `
        + "Nothing was sent; choose the right files, or upload them from their patient's page.");
    }
    resetForm();
    runUpload(job);
  });

  /** The identity decision for these files: a claim, null when the physician cancels, undefined
   *  when the browser cannot read their patient (the institution compares after the upload). */
  async function identityFor(chosenFiles) {
    const check = await checkFiles(patient, chosenFiles);
    if (!check) return undefined;
    if (!check.differs.length) return identityClaim(MATCH, check.dicom);
    return (await confirmMismatch(patient, check, "Upload anyway", controller.signal))
      ? identityClaim(CONFIRMED_MISMATCH, check.dicom) : null;
  }

  function showFormError(text) {
    mount(result, h("p", { class: "form-error", role: "alert", text }));
  }

  /** One upload with the values bound at its submission, in its own row with its own progress. */
  function runUpload(job) {
    const progress = h("progress", { max: 100, value: 0, class: "upload-progress", "aria-label": `Upload ${job.number} progress` });
    const progressText = h("span", { class: "muted upload-progress-text" });
    const outcome = h("div", { class: "upload-outcome" });
    const labels = [job.recordType || "type from the file", job.description ? `“${job.description}”` : "no description"];
    const item = h("li", { class: "upload-job", dataset: { job: job.number } },
      h("p", { class: "upload-job-head" }, h("strong", { text: `Upload ${job.number}` }),
        ` · ${job.files.length} file${job.files.length === 1 ? "" : "s"} to ${job.node.name} · `,
        h("span", { class: "upload-label", text: labels.join(" · ") })),
      h("div", { class: "progress-row" }, progress, progressText), outcome);
    jobs.append(item);
    const fail = (err) => {
      progress.value = 0;
      progressText.textContent = "";
      mount(outcome, h("p", { class: "form-error", role: "alert", text: `Upload failed: ${ctx.describeError(err)}` }),
        h("button", { type: "button", class: "btn btn-small", text: "Retry with the same files and labels",
          onclick: () => { item.remove(); runUpload(job); } }));
    };
    const onProgress = (loaded, total) => {
      progress.value = Math.round((loaded / total) * 100);
      progressText.textContent = `${formatBytes(loaded)} of ${formatBytes(total)} sent`;
    };
    const onStep = (text) => { progressText.textContent = text; };
    upload(job, onProgress, onStep).then(({ meta, wanted, registered }) => {
      progress.value = 100;
      progressText.textContent = "Done.";
      const kept = registered.record_type !== wanted.record_type || registered.description !== wanted.description;
      mount(outcome, h("div", { class: "success", role: "status" },
        h("p", { text: `Uploaded ${meta.frames} slice${meta.frames === 1 ? "" : "s"} (${meta.columns}×${meta.rows}, ${meta.modality || "?"}).` }),
        h("p", { class: "registered-as", text: `Registered as: ${recordLabel(registered)}` }),
        kept ? h("p", { class: "warn", text: "This series was already registered with the labels above, which were kept; correct them from the patient page if they are wrong." }) : null,
        h("a", { class: "btn btn-primary", href: viewerHref(ownInst.id, job.node.id, meta.id, patient.id), text: "Open in viewer" })));
      ctx.announce(`Upload ${job.number} finished and the record is registered.`);
    }).catch(fail);
  }

  /** Send the files to the node, then register the record with the labels bound to `job`. */
  async function upload(job, onProgress, onStep) {
    const { node } = job;
    const meta = await ctx.session.withToken(node.url, (token) => sendFiles(buildUrl(node.url, "api/v1/records"), token, job.files, onProgress, controller.signal));
    onStep("Stored on the node; registering the record…");
    const wanted = { record_type: job.recordType || recordTypeFor(types, meta.modality), description: (job.description || meta.description || "").trim() };
    // the entry as registered is shown as the upload's outcome: another record's would be shown as this one
    const register = async (identity) => ctx.session.fetchJson(ownInst.server_url, "api/v1/records", {
      method: "POST", shape: registeredRecordShape(meta.id),
      json: {
        id: meta.id, node_id: node.id, rows: meta.rows, columns: meta.columns, frames: meta.frames,
        modality: meta.modality || "", ...wanted, patient_id: patient.id, study_date: isoDate(meta.study_date),
        patient_reference: await patientReference(ctx, patient.id),
        receipt: meta.receipt, // the node's signed proof that it stores the record, naming its DICOM patient
        ...(identity ? { identity } : {}),
      },
    });
    let registered;
    try {
      registered = await register(job.identity);
    } catch (err) {
      // the institution compared what the node read (a file the browser could not read, or another
      // patient in a later file): ask now; unconfirmed, the series waits on the work list unregistered
      if (err.code !== "identity_unconfirmed" || !err.details.dicom_patient) throw err;
      const check = withComparison(patient, err.details.dicom_patient);
      if (!(await confirmMismatch(patient, check, "Register anyway", controller.signal))) {
        throw new ApiError(409, "identity_unconfirmed", `not registered for ${patientName(patient)}: the images name `
          + `${check.differs.length ? "another patient" : "no patient"}. They are stored on the node and wait on the work list for their patient.`);
      }
      registered = await register(identityClaim(CONFIRMED_MISMATCH, check.dicom));
    }
    // registered: off the node's work list (worklist.js), which lists what no patient has yet
    await ctx.session.fetchJson(node.url, apiPath`api/v1/records/${meta.id}/filed`, { method: "POST" });
    return { meta, wanted, registered };
  }

  if (!nodes.length) submit.disabled = true;
  mount(ctx.main, h("section", { class: "page page-narrow" },
    h("div", { class: "page-head" }, h("div", {},
      h("h1", { text: "Upload DICOM" }),
      h("p", { class: "muted", text: `${patientName(patient)} · ${ownInst.name}` }))),
    nodes.length ? null : h("p", { class: "notice", role: "alert", text: `${ownInst.name} has no render node registered yet, so nothing can be uploaded. Ask an administrator to add one.` }),
    form, jobs));
  return () => controller.abort();
}
