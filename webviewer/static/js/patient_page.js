// A patient's page: identity, then every institution's findings and studies (its registered series
// grouped by study, `studies.js`), each institution filled in as its server answers (concurrently);
// an institution that does not answer is marked.

import { h, mount, formatDate } from "./dom.js";
import { patientName, sexLabel } from "./patients.js";
import { linkKey, queryAllInstitutions, recordLabel, viewerHref } from "./federation.js";
import { studyList } from "./studies.js";
import { apiPath, labelText } from "./api.js";
import { patientFindingsShape, patientRecordsShape } from "./answers.js";

export async function patientView(ctx, patientId) {
  const patient = await ctx.session.toplevel(apiPath`api/v1/patients/${patientId}`);
  const controller = new AbortController();
  const own = ctx.session.user.institution_id;
  const blocks = h("div", { class: "institutions", id: "institutions" });

  mount(ctx.main, h("section", { class: "page" },
    h("div", { class: "page-head" },
      h("div", {},
        h("h1", { id: "patient-name", text: patientName(patient) }),
        h("p", { class: "muted" },
          `${sexLabel(patient.sex)} · born ${formatDate(patient.birth_date)} · insurance no. `,
          h("span", { class: "mono", text: labelText(patient.insurance_number) }))),
      h("div", { class: "actions" },
        h("a", { class: "btn", href: `#/patients/${patient.id}/edit`, text: "Edit patient" }),
        h("a", { class: "btn", href: `#/patients/${patient.id}/upload`, text: "Upload DICOM" }),
        h("a", { class: "btn btn-primary", href: `#/patients/${patient.id}/findings/new`, text: "Write finding" }))),
    blocks));

  const institutions = await ctx.dir.institutions();
  const sorted = [...institutions].sort((a, b) => Number(b.id === own) - Number(a.id === own) || a.name.localeCompare(b.name));
  const slots = new Map();
  for (const inst of sorted) {
    const slot = {
      state: h("span", { class: "badge badge-wait", text: "loading…" }),
      findings: h("div", { class: "findings" }, h("p", { class: "muted", text: "Loading findings…" })),
      records: h("div", { class: "records" }, h("p", { class: "muted", text: "Loading studies…" })),
      recordsHead: h("h3", { class: "sub", text: "Studies and series" }),
    };
    slots.set(inst.id, slot);
    blocks.append(h("article", { class: "panel institution", "aria-labelledby": `inst-${inst.id}`, dataset: { institution: inst.id } },
      h("header", { class: "institution-head" },
        h("h2", { id: `inst-${inst.id}`, text: labelText(inst.name) }), slot.state),
      h("h3", { class: "sub", text: "Findings" }), slot.findings,
      slot.recordsHead, slot.records));
  }

  const counts = { findings: 0, down: new Set() };
  // Findings and records arrive separately; a finding's record links get readable names once
  // the institution holding each record has answered.
  const labels = new Map();
  const answeredRecords = new Set();  // institutions whose list of this patient's records arrived
  const relabelLinks = () => {
    for (const el of blocks.querySelectorAll("[data-link]")) {
      const label = labels.get(el.dataset.link);
      if (label) el.textContent = label;
    }
  };
  // An institution is "up to date" once both its findings and its records have arrived.
  const answers = new Map();
  const arrived = (inst) => {
    answers.set(inst.id, (answers.get(inst.id) || 0) + 1);
    if (answers.get(inst.id) === 2) {
      const slot = slots.get(inst.id);
      slot.state.className = "badge badge-ok";
      slot.state.textContent = "up to date";
    }
  };
  const markDown = (inst, error) => {
    const slot = slots.get(inst.id);
    if (!counts.down.has(inst.id)) {
      counts.down.add(inst.id);
      slot.state.className = "badge badge-down";
      slot.state.textContent = "not answering";
      slot.state.title = ctx.describeError(error);
      slot.findings.closest("article").classList.add("is-down");
      ctx.announce(`${inst.name} did not answer.`);
    }
    const text = `${inst.name} did not answer (${ctx.describeError(error)}). Its findings and records cannot be shown now.`;
    mount(slot.findings, h("p", { class: "warn", text }));
    slot.records.replaceChildren();
    slot.recordsHead.hidden = true;
  };

  const findingsDone = queryAllInstitutions(ctx, "api/v1/findings", { patient_id: patient.id }, patientFindingsShape(patient.id), (inst, result) => {
    const slot = slots.get(inst.id);
    if (result.error) return markDown(inst, result.error);
    if (counts.down.has(inst.id)) return;
    arrived(inst);
    counts.findings += result.items.length;
    const items = [...result.items].sort((a, b) => (b.date || "").localeCompare(a.date || ""));
    mount(slot.findings, items.length
      ? items.map((f) => findingCard(ctx, patient, inst, f))
      : h("p", { class: "muted", text: "No findings here." }));
    relabelLinks();
  }, controller.signal);

  const recordsDone = queryAllInstitutions(ctx, "api/v1/records", { patient_id: patient.id }, patientRecordsShape(patient.id), (inst, result) => {
    const slot = slots.get(inst.id);
    if (result.error) return markDown(inst, result.error);
    if (counts.down.has(inst.id)) return;
    arrived(inst);
    const none = () => mount(slot.records, h("p", { class: "muted", text: "No records here." }));
    if (result.items.length) mount(slot.records, studyList(ctx, inst, patient, result.items, controller.signal, none));
    else none();
    answeredRecords.add(inst.id);
    for (const record of result.items) labels.set(linkKey({ institution_id: inst.id, record_id: record.id }), recordLabel(record));
    relabelLinks();
  }, controller.signal);

  // Once every institution has answered, a link still without a label names no record of this
  // patient at an institution whose records arrived: another patient's record (a finding may cite
  // any record of another institution, which its server cannot check), or one deleted since. It is
  // flagged and not offered as a link to open under this patient's name. (The viewer checks the
  // same from the other side: the record's registration names another patient, identity.js.)
  const flagUnresolvedLinks = () => {
    for (const el of blocks.querySelectorAll("[data-link]")) {
      const { link, institution } = el.dataset;
      if (labels.has(link) || !answeredRecords.has(institution)) continue;
      el.replaceWith(h("span", { class: "unresolved", dataset: { link, institution, unresolved: "" },
        text: `${el.textContent}: not among this patient's records (another patient's, or deleted)` }));
    }
  };

  Promise.all([findingsDone, recordsDone]).then(() => {
    if (controller.signal.aborted) return;
    flagUnresolvedLinks();
    const down = counts.down.size;
    ctx.announce(`Loaded ${counts.findings} finding${counts.findings === 1 ? "" : "s"}` +
      (down ? `; ${down} institution${down === 1 ? "" : "s"} did not answer.` : "."));
  });
  return () => controller.abort();
}

function findingCard(ctx, patient, inst, f) {
  const mine = f.author_id === ctx.session.user.id;
  const sections = [["Findings", f.findings], ["Conclusion", f.conclusion], ["Recommendation", f.recommendation]]
    .filter(([, text]) => text);
  const links = (f.records || []).map((link) => {
    const attrs = { dataset: { link: linkKey(link), institution: link.institution_id }, text: `Record ${link.record_id.slice(0, 10)}…` };
    return h("li", {}, link.node_id
      ? h("a", { ...attrs, href: viewerHref(link.institution_id, link.node_id, link.record_id, patient.id) })
      : h("span", attrs));
  });
  return h("article", { class: "finding", dataset: { finding: f.id } },
    h("header", { class: "finding-head" },
      h("h4", { text: labelText(f.description || "Finding") }),
      h("span", { class: "muted", text: `${formatDate(f.date)} · ${labelText(f.author_name)}` })),
    sections.map(([title, text]) => h("div", { class: "finding-part" },
      h("span", { class: "finding-label", text: title }), h("p", { text }))),
    links.length ? h("div", { class: "finding-part" }, h("span", { class: "finding-label", text: "Records" }), h("ul", { class: "links" }, links)) : null,
    f.changed
      ? h("p", { class: "muted finding-changed" }, `Changed ${formatDate(f.updated_at)} · `,
        h("a", { href: `#/patients/${patient.id}/institutions/${inst.id}/findings/${f.id}/history`, text: "History" }))
      : null,
    mine ? h("div", { class: "actions" },
      h("a", { class: "btn btn-small", href: `#/patients/${patient.id}/findings/${f.id}`, text: "Edit" })) : null);
}
