// Uploading DICOM files (or a whole folder) to a render node of the physician's institution,
// with a progress bar, per-file errors in words, and the record then registered at the
// institution server so that it appears on the patient's page.

import { h, mount, field, select, formatBytes } from "./dom.js";
import { errorFromResponse, buildUrl, ApiError } from "./api.js";
import { patientName, patientReference } from "./patients.js";
import { viewerHref } from "./federation.js";

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
function recordTypeFor(types, modality) {
  const found = types.find((t) => t.code.toUpperCase() === String(modality || "").toUpperCase());
  return found ? found.code : (modality || "");
}

function isoDate(value) {
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
      if (xhr.status >= 200 && xhr.status < 300) resolve(await response.json());
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
    ctx.session.toplevel(`api/v1/patients/${patientId}`),
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
  const progress = h("progress", { max: 100, value: 0, id: "upload-progress", "aria-label": "Upload progress" });
  const progressText = h("span", { class: "muted", id: "upload-progress-text" });
  const result = h("div", { class: "upload-result", id: "upload-result" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", text: "Upload" });
  let files = [];
  let rejected = [];

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

  const form = h("form", { class: "panel form-grid", novalidate: true },
    field("DICOM files", filesInput, "One multi-frame file or the single-frame files of one series."),
    field("…or a whole folder", folderInput),
    h("div", { class: "span-2" }, chosen),
    field("Render node", nodeSelect), field("Record type", typeSelect),
    h("div", { class: "span-2" }, field("Description", description)),
    h("div", { class: "span-2 progress-row" }, progress, progressText),
    h("div", { class: "span-2" }, result),
    h("div", { class: "actions span-2" }, submit, h("a", { class: "btn btn-quiet", href: back, text: "Back to patient" })));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren();
    if (!nodes.length) return showError(new ApiError(0, "no_node", "Your institution has no render node registered; ask an administrator."));
    if (!files.length) return showError(new ApiError(0, "no_files", rejected.length
      ? "None of the chosen files is a DICOM file." : "Choose DICOM files or a folder first."));
    const node = nodes.find((n) => n.id === nodeSelect.value);
    submit.disabled = true;
    progress.value = 0;
    try {
      const meta = await ctx.session.withToken(node.url, (token) => sendFiles(buildUrl(node.url, "api/v1/records"), token, files, (loaded, total) => {
        progress.value = Math.round((loaded / total) * 100);
        progressText.textContent = `${formatBytes(loaded)} of ${formatBytes(total)} sent`;
      }, controller.signal));
      progress.value = 100;
      progressText.textContent = "Stored on the node; registering the record…";
      await ctx.session.fetchJson(ownInst.server_url, "api/v1/records", {
        method: "POST",
        json: {
          id: meta.id, node_id: node.id, rows: meta.rows, columns: meta.columns, frames: meta.frames,
          modality: meta.modality || "", record_type: typeSelect.value || recordTypeFor(types, meta.modality), patient_id: patient.id,
          description: description.value.trim() || meta.description || "", study_date: isoDate(meta.study_date),
          patient_reference: await patientReference(ctx, patient.id),
          receipt: meta.receipt, // the node's signed proof that it stores the record
        },
      });
      progressText.textContent = "Done.";
      mount(result, h("div", { class: "success", role: "status" },
        h("p", { text: `Uploaded ${meta.frames} slice${meta.frames === 1 ? "" : "s"} (${meta.columns}×${meta.rows}, ${meta.modality || "?"}).` }),
        h("a", { class: "btn btn-primary", href: viewerHref(ownInst.id, node.id, meta.id), text: "Open in viewer" })));
      ctx.announce("Upload finished and the record is registered.");
    } catch (err) {
      showError(err);
    } finally {
      submit.disabled = false;
    }
  });

  /** The node names the offending file and the reason in its message ("x.dcm: no Pixel Data"). */
  function showError(err) {
    progress.value = 0;
    progressText.textContent = "";
    mount(result, h("p", { class: "form-error", role: "alert", text: `Upload failed: ${ctx.describeError(err)}` }));
  }

  if (!nodes.length) submit.disabled = true;
  mount(ctx.main, h("section", { class: "page page-narrow" },
    h("div", { class: "page-head" }, h("div", {},
      h("h1", { text: "Upload DICOM" }),
      h("p", { class: "muted", text: `${patientName(patient)} · ${ownInst.name}` }))),
    nodes.length ? null : h("p", { class: "notice", role: "alert", text: `${ownInst.name} has no render node registered yet, so nothing can be uploaded. Ask an administrator to add one.` }),
    form));
  return () => controller.abort();
}
