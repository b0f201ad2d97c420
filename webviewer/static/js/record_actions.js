// A record's card on the patient page (its series in the study list, `studies.js`), with "Edit" and "Delete" for those the institution server
// allows (its `editable` flag: the uploader and the institution's administrators, one rule on the
// server). A series saved under another series' label is corrected here (issue 15 item 1).
// Deleting removes the registry entry first (the institution's rule is the gate), then asks the
// render node to delete the stored series; the node's own rule decides, and a refusal is shown.
// Images the node keeps (a modality's series, filed from the work list, is not the physician's to
// delete) go back on the node's work list: its filed mark is taken off, or they were on no page.

import { h, mount, select, formatDate } from "./dom.js";
import { recordLabel, viewerHref } from "./federation.js";
import { apiPath, labelText } from "./api.js";
import { registeredRecordShape } from "./answers.js";

function recordPath(record) {
  return apiPath`api/v1/records/${record.id}`;
}

/**
 * After the registry entry is gone: ask the render node to delete the stored series, unless the
 * same series is still registered on a node sharing its store (deleting it there would take the
 * images from under that registration). Answers what happened, in words.
 */
async function deleteStoredSeries(ctx, inst, record) {
  try {
    const other = await ctx.session.fetchJson(inst.server_url, recordPath(record), { shape: registeredRecordShape(record.id) });
    if ((other.node_ids || [other.node_id]).includes(record.node_id)) {
      return "The stored images were kept: the same series is still registered on a render node sharing this node's store.";
    }
  } catch (err) {
    if (err.status !== 404) return `The stored images were kept: ${ctx.describeError(err)}`;
  }
  let node = null;
  try {
    node = await ctx.dir.node(inst.id, record.node_id);
    await ctx.session.fetchJson(node.url, recordPath(record), { method: "DELETE" });
    return "The stored images were deleted from the render node too.";
  } catch (err) {
    if (err.status === 404) return "The render node no longer held the images.";
    const kept = `The render node kept the stored images: ${ctx.describeError(err)}`;
    return node ? `${kept} ${await backOnWorklist(ctx, node, record)}` : kept;
  }
}

/**
 * The node keeps the images of a series whose registration is gone: take its filed mark off, so it
 * is back on the node's work list to be attached to its patient (else it was on no patient's page
 * and on no work list). The browser does it: the institution and the node never call each other.
 */
async function backOnWorklist(ctx, node, record) {
  const where = `the work list of ${labelText(node.name)}`;
  try {
    await ctx.session.fetchJson(node.url, apiPath`api/v1/records/${record.id}/filed`, { method: "DELETE" });
    return `The series is back on ${where}.`;
  } catch (err) {
    if (err.status === 409) return `The series is on ${where}.`; // never marked filed
    return `It could not be put back on ${where}: ${ctx.describeError(err)}`;
  }
}

/**
 * The card of one record; `onGone()` runs once it is deleted. `thumbnail` (an element kept across
 * relabelling) and `facts` (a line of what the node says of the series) are the study list's.
 */
export function recordCard(ctx, inst, patient, record, onGone, thumbnail = null, facts = null) {
  const body = h("div", { class: "series-body" });
  const card = h("article", { class: "series-card", dataset: { record: record.id, node: record.node_id } }, thumbnail, body);
  const show = (r, note) => {
    record = r;
    const actions = [h("a", { class: "btn btn-small", href: viewerHref(inst.id, r.node_id, r.id, patient.id),
      "aria-label": `Open ${recordLabel(r)} in the viewer`, text: "Open" })];
    if (r.editable) {
      actions.push(
        h("button", { type: "button", class: "btn btn-small", "aria-label": `Edit ${recordLabel(r)}`, text: "Edit",
          onclick: () => edit().catch((err) => ctx.showAlert(`The record cannot be edited now: ${ctx.describeError(err)}`)) }),
        h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Delete ${recordLabel(r)}`, text: "Delete", onclick: () => confirmDelete() }));
    }
    mount(body,
      h("p", { class: "series-title" }, h("strong", { class: "record-type", text: r.record_type || r.modality || "Record" }), " ",
        h("span", { class: "record-description", text: [labelText(r.description), formatDate(r.study_date)].filter(Boolean).join(" · ") })),
      facts,
      h("p", { class: "series-size muted", text: `${r.frames} slice${r.frames === 1 ? "" : "s"} · ${r.columns}×${r.rows}` }),
      note ? h("p", { class: "record-note", role: "status", text: note }) : null,
      h("div", { class: "row-actions" }, actions));
  };

  async function edit() {
    const types = await ctx.dir.recordTypes();
    const known = types.some((t) => t.code === record.record_type);
    const typeSelect = select("record_type", [
      ...(known ? [] : [[record.record_type, record.record_type || "(none)"]]),
      ...types.map((t) => [t.code, `${t.code} — ${t.name}`])], record.record_type);
    typeSelect.setAttribute("aria-label", "Record type");
    const description = h("input", { name: "description", maxlength: 2000, value: record.description, "aria-label": "Description" });
    const error = h("p", { class: "form-error", role: "alert", hidden: true });
    const save = h("button", { type: "submit", class: "btn btn-small btn-primary", text: "Save" });
    const form = h("form", { class: "record-edit", novalidate: true },
      h("label", { class: "record-field" }, h("span", { text: "Type" }), typeSelect),
      h("label", { class: "record-field grow" }, h("span", { text: "Description" }), description),
      h("div", { class: "actions" }, save,
        h("button", { type: "button", class: "btn btn-small btn-quiet", text: "Cancel", onclick: () => show(record) })),
      error);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      save.disabled = true;
      try {
        const changed = await ctx.session.fetchJson(inst.server_url, recordPath(record), {
          method: "PATCH", params: { node_id: record.node_id },
          json: { record_type: typeSelect.value, description: description.value.trim() },
          shape: registeredRecordShape(record.id),
        });
        show(changed, "Saved; the change is recorded in the audit log.");
        ctx.announce(`Record relabelled as ${recordLabel(changed)}.`);
      } catch (err) {
        // a bad answer came after the server took the change, or not: say neither
        error.textContent = `${err.code === "bad_answer" ? "Whether it was saved is not known" : "Not saved"}: ${ctx.describeError(err)}`;
        error.hidden = false;
        save.disabled = false;
      }
    });
    mount(body, form);
    description.focus();
  }

  function confirmDelete() {
    const message = h("p", { class: "form-error", role: "alert", hidden: true });
    const yes = h("button", { type: "button", class: "btn btn-small btn-danger", text: "Delete record", onclick: () => remove() });
    mount(body, h("div", { class: "record-confirm warn", role: "group", "aria-label": "Confirm deletion" },
      h("p", { text: `Delete “${recordLabel(record)}” of ${labelText(inst.name)}? Findings that cite it keep the link, but the images can no longer be opened: the render node is asked to delete the stored series.` }),
      h("div", { class: "actions" }, yes,
        h("button", { type: "button", class: "btn btn-small btn-quiet", text: "Cancel", onclick: () => show(record) })),
      message));
    yes.focus();

    async function remove() {
      yes.disabled = true;
      try {
        await ctx.session.fetchJson(inst.server_url, recordPath(record), { method: "DELETE", params: { node_id: record.node_id } });
      } catch (err) {
        message.textContent = `Not deleted: ${ctx.describeError(err)}`;
        message.hidden = false;
        yes.disabled = false;
        return;
      }
      const label = recordLabel(record);
      const outcome = await deleteStoredSeries(ctx, inst, record);
      onGone();
      ctx.announce(`Record ${label} deleted. ${outcome}`);
      ctx.showAlert(`Record “${label}” deleted. ${outcome}`, "info");
    }
  }

  show(record);
  return card;
}
