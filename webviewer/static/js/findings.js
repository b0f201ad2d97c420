// Writing and editing a finding at the physician's own institution, with the records it refers
// to (from any institution) attached or detached.

import { h, mount, field } from "./dom.js";
import { patientName, patientReference } from "./patients.js";
import { linkKey, patientRecords, recordLabel } from "./federation.js";
import { apiPath } from "./api.js";
import { findingShape } from "./answers.js";

export async function findingFormView(ctx, patientId, findingId) {
  const ownInst = await ctx.dir.ownInstitution();
  const [patient, finding] = await Promise.all([
    ctx.session.toplevel(apiPath`api/v1/patients/${patientId}`),
    findingId ? ctx.session.fetchJson(ownInst.server_url, apiPath`api/v1/findings/${findingId}`, { shape: findingShape(findingId) }) : null,
  ]);
  const v = finding || { date: new Date().toISOString().slice(0, 10), records: [] };
  const controller = new AbortController();

  const description = h("input", { name: "description", required: true, value: v.description || "", maxlength: 200 });
  const date = h("input", { name: "date", type: "date", required: true, value: v.date || "" });
  const findingsText = h("textarea", { name: "findings", rows: 6 }); findingsText.value = v.findings || "";
  const conclusion = h("textarea", { name: "conclusion", rows: 3 }); conclusion.value = v.conclusion || "";
  const recommendation = h("textarea", { name: "recommendation", rows: 2 }); recommendation.value = v.recommendation || "";
  const recordBox = h("fieldset", { class: "record-picker" },
    h("legend", { text: "Attached records (at least one)" }), h("p", { class: "muted", text: "Loading the patient's records…" }));
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary", text: finding ? "Save finding" : "Save new finding" });
  const back = `#/patients/${patient.id}`;

  const initial = new Map((v.records || []).map((link) => [linkKey(link), link]));
  const checks = new Map();   // key -> {checkbox, link}

  patientRecords(ctx, patient.id, controller.signal).then(({ found, failed }) => {
    if (controller.signal.aborted) return;
    const rows = [];
    const seen = new Set();
    for (const { institution, record } of found) {
      const link = { record_id: record.id, institution_id: institution.id, node_id: record.node_id };
      const key = linkKey(link);
      if (seen.has(key)) continue;
      seen.add(key);
      const box = h("input", { type: "checkbox", name: "record", value: key, id: `rec-${key.replace("/", "-")}` });
      box.checked = initial.has(key);
      checks.set(key, { box, link });
      rows.push(h("div", { class: "check" }, box,
        h("label", { for: box.id }, h("strong", { text: recordLabel(record) }), h("span", { class: "muted", text: ` — ${institution.name}` }))));
    }
    for (const [key, link] of initial) {
      if (seen.has(key)) continue;   // attached, but its institution did not list it: keep it visible
      const box = h("input", { type: "checkbox", name: "record", value: key, id: `rec-${key.replace("/", "-")}`, checked: true });
      checks.set(key, { box, link });
      rows.push(h("div", { class: "check" }, box, h("label", { for: box.id, text: `Record ${link.record_id.slice(0, 12)}… (not listed now)` })));
    }
    mount(recordBox, h("legend", { text: "Attached records (at least one)" }),
      rows.length ? rows : h("p", { class: "muted", text: "This patient has no records yet." }),
      failed.map(({ institution }) => h("p", { class: "warn", text: `${institution.name} did not answer; its records cannot be attached now.` })));
  });

  const form = h("form", { class: "panel form-grid", novalidate: true },
    field("Short description", description), field("Date", date),
    h("div", { class: "field span-2" }, field("Findings", findingsText)),
    h("div", { class: "field span-2" }, field("Conclusion", conclusion)),
    h("div", { class: "field span-2" }, field("Recommendation", recommendation)),
    h("div", { class: "span-2" }, recordBox),
    error,
    h("div", { class: "actions span-2" }, submit, h("a", { class: "btn btn-quiet", href: back, text: "Cancel" }),
      finding ? h("button", { type: "button", class: "btn btn-danger", text: "Delete finding", onclick: remove }) : null));

  async function remove() {
    if (!confirm("Delete this finding? This cannot be undone.")) return;
    try {
      await ctx.session.fetchJson(ownInst.server_url, apiPath`api/v1/findings/${finding.id}`, { method: "DELETE" });
      ctx.announce("Finding deleted.");
      ctx.navigate(back);
    } catch (err) {
      error.textContent = ctx.describeError(err);
      error.hidden = false;
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const missing = [[description, "short description"], [date, "date"], [findingsText, "findings"], [conclusion, "conclusion"]]
      .filter(([el]) => !el.value.trim());
    const anyRecord = [...checks.values()].some((c) => c.box.checked);
    if (missing.length || !anyRecord) {
      const parts = missing.map(([, name]) => name);
      if (!anyRecord) parts.push("at least one attached record");
      error.textContent = `A finding needs: ${parts.join(", ")}.`;
      error.hidden = false;
      if (missing.length) missing[0][0].focus();
      return;
    }
    const body = {
      description: description.value.trim(), date: date.value, findings: findingsText.value.trim(),
      conclusion: conclusion.value.trim(), recommendation: recommendation.value.trim(),
    };
    const chosen = new Map([...checks].filter(([, c]) => c.box.checked).map(([key, c]) => [key, c.link]));
    submit.disabled = true;
    const base = ownInst.server_url;
    try {
      if (!finding) {
        await ctx.session.fetchJson(base, "api/v1/findings", {
          method: "POST",
          json: { ...body, patient_id: patient.id, records: [...chosen.values()], patient_reference: await patientReference(ctx, patient.id) },
        });
      } else {
        await ctx.session.fetchJson(base, apiPath`api/v1/findings/${finding.id}`, { method: "PUT", json: body });
        for (const [key, link] of chosen) {
          if (!initial.has(key)) await ctx.session.fetchJson(base, apiPath`api/v1/findings/${finding.id}/records`, { method: "POST", json: link });
        }
        for (const [key, link] of initial) {
          if (checks.has(key) && !chosen.has(key)) {
            await ctx.session.fetchJson(base, apiPath`api/v1/findings/${finding.id}/records/${link.record_id}`, {
              method: "DELETE", params: { institution_id: link.institution_id },
            });
          }
        }
      }
      ctx.announce("Finding saved.");
      ctx.navigate(back);
    } catch (err) {
      error.textContent = ctx.describeError(err);
      error.hidden = false;
      submit.disabled = false;
    }
  });

  mount(ctx.main, h("section", { class: "page page-narrow" },
    h("div", { class: "page-head" }, h("div", {},
      h("h1", { text: finding ? "Edit finding" : "New finding" }),
      h("p", { class: "muted", text: `${patientName(patient)} · ${ownInst.name}` }))),
    form));
  description.focus();
  return () => controller.abort();
}
