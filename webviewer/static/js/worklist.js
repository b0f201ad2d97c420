// The work list (issue 11): series on the render nodes of the physician's institution that no SIVR
// patient has yet (sent by a modality through C-STORE or STOW-RS, or uploaded and never registered).
// Each shows its DICOM patient, study and series, and the matching rule's proposal
// (patient_match.js: the patient the series' study is filed to at the institution, else the DICOM
// patient rule) or a patient chooser. Attaching asks the node for a receipt, registers the
// series at the institution for the patient (with the decision, which the institution audits) and
// tells the node it is filed: the series then appears on the patient's page. The browser does all
// of it, because backends never call each other.

import { h, mount, formatDate } from "./dom.js";
import { patientName, patientReference, searchPatients } from "./patients.js";
import { dicomPersonName } from "./identity.js";
import { propose, studyFiling } from "./patient_match.js";
import { recordTypeFor, isoDate } from "./upload.js";
import { apiPath } from "./api.js";
import { INSTITUTION_INFO, RECEIPT, WORKLIST_PAGE } from "./answers.js";

/** @typedef {import("./patient_match.js").SivrPatient} SivrPatient */

function dicomName(value) {
  const { family, given } = dicomPersonName(value);
  return [family, given].filter(Boolean).join(", ") || "no name";
}

function dicomLine(p) {
  return [dicomName(p.name), p.patient_id ? `ID ${p.patient_id}${p.issuer ? ` (${p.issuer})` : ""}` : "no PatientID",
    isoDate(p.birth_date) ? `born ${formatDate(isoDate(p.birth_date))}` : "no birth date", p.sex || null]
    .filter(Boolean).join(" · ");
}

function sivrLine(p) {
  return `${patientName(p)} · born ${formatDate(p.birth_date)} · ins. no. ${p.insurance_number}`;
}

export async function worklistView(ctx) {
  const inst = await ctx.dir.ownInstitution();
  const [nodes, types, info] = await Promise.all([
    ctx.dir.nodes(inst.id), ctx.dir.recordTypes(), ctx.session.fetchJson(inst.server_url, "api/v1/info", { shape: INSTITUTION_INFO })]);
  const issuer = info.issuer_of_patient_id || "";
  const controller = new AbortController();
  const list = h("ol", { class: "worklist", id: "worklist", "aria-label": "Series waiting for a patient" });
  const problems = h("div", { id: "worklist-problems" });
  /** Per study UID on the page: the patients it is filed to (one request per study) and its items. */
  const studies = new Map();
  /** Per decision area, the latest decision asked for it: an earlier one that answers later is not shown. */
  const turns = new Map();

  /** Register the series for `patient` at the institution, then mark it filed at its node. */
  async function attach(node, item, patient, decision) {
    const { receipt } = await ctx.session.fetchJson(node.url, apiPath`api/v1/records/${item.id}/receipt`, { method: "POST", shape: RECEIPT });
    await ctx.session.fetchJson(inst.server_url, "api/v1/records", {
      method: "POST",
      json: {
        id: item.id, node_id: node.id, rows: item.rows, columns: item.columns, frames: item.frames,
        modality: item.series.modality || item.modality || "", record_type: recordTypeFor(types, item.series.modality),
        description: (item.series.description || item.study.description || "").trim(),
        patient_id: patient.id, study_date: isoDate(item.study.date),
        patient_reference: await patientReference(ctx, patient.id), receipt,
        identity: { decision, dicom_patient: item.patient },
      },
    });
    await ctx.session.fetchJson(node.url, apiPath`api/v1/records/${item.id}/filed`, { method: "POST" });
  }

  /** The confirm button: nothing is attached without this click. */
  function confirmButton(node, item, patient, decision, outcome) {
    const button = h("button", { type: "button", class: "btn btn-primary worklist-attach", text: `Attach to ${patientName(patient)}` });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await attach(node, item, patient, decision);
        mount(outcome, h("p", { class: "success worklist-done", role: "status" }, `Attached to ${patientName(patient)}. `,
          h("a", { href: `#/patients/${patient.id}`, text: "Open the patient's page" })));
        ctx.announce(`Series attached to ${patientName(patient)}.`);
        filedNow(item, patient);
      } catch (err) {
        button.disabled = false;
        mount(outcome, h("p", { class: "form-error", role: "alert", text: `Not attached: ${ctx.describeError(err)}` }));
      }
    });
    return button;
  }

  /** Search for the patient (or create one), then confirm the choice. */
  function chooser(node, item, candidates, decisionArea) {
    const input = h("input", { type: "search", class: "worklist-search", "aria-label": "Find the patient by name or insurance number",
      placeholder: "Patient name or insurance number", autocomplete: "off" });
    const results = h("ul", { class: "worklist-candidates" });
    const chosen = h("div", { class: "worklist-chosen" });
    const show = (patients) => mount(results, patients.map((p) => h("li", {},
      h("button", { type: "button", class: "btn btn-small worklist-choose", text: `Choose ${sivrLine(p)}`,
        onclick: () => mount(chosen, h("p", { text: `Chosen: ${sivrLine(p)}` }), confirmButton(node, item, p, "chosen", decisionArea)) }))));
    const form = h("form", { class: "search-form", role: "search" }, input, h("button", { type: "submit", class: "btn", text: "Search" }));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!input.value.trim()) return;
      try {
        const found = await searchPatients(ctx.session, input.value.trim(), controller.signal);
        if (!found.length) mount(results, h("li", { class: "muted", text: "No patient found." }));
        else show(found);
      } catch (err) {
        if (err.name !== "AbortError") mount(results, h("li", { class: "form-error", text: ctx.describeError(err) }));
      }
    });
    show(candidates);
    return h("div", { class: "worklist-chooser" }, form, results, chosen,
      h("p", { class: "muted" }, "Not found? ", h("a", { href: "#/patients/new?from=worklist", text: "Create the patient" }),
        " with the images' details; you come back here to attach the series."));
  }

  /** The study of `item` (none: null), asked of the institution once for all its items on the page. */
  function studyOf(item) {
    const uid = String(item.study.study_uid || "").trim();
    if (!uid) return null;
    if (!studies.has(uid)) {
      const filing = studyFiling(ctx, inst.server_url, uid, controller.signal);
      filing.catch(() => {});  // each item says why it could not be checked
      studies.set(uid, { filing, items: [] });
    }
    return studies.get(uid);
  }

  /** `item` was just attached to `patient`: the other series of its study waiting here are now proposed for them. */
  function filedNow(item, patient) {
    const study = studyOf(item);
    if (!study) return;
    study.filing = Promise.resolve([{ id: patient.id, patient, error: "" }]);
    for (const other of study.items) {
      if (other.item !== item && !other.decisionArea.querySelector(".worklist-done")) decide(other.node, other.item, other.decisionArea);
    }
  }

  /** What the item's study says: the patients it is filed to, or [] with a note where that could not be asked. */
  async function filedPatients(item) {
    const study = studyOf(item);
    if (!study) return { filed: [], note: null };
    try {
      return { filed: await study.filing, note: null };
    } catch (err) {
      if (err.name === "AbortError") throw err;
      return { filed: [], note: h("p", { class: "notice worklist-study-unchecked",
        text: `Whether other series of this study are filed to a patient could not be checked (${ctx.describeError(err)}): if they are, the institution refuses this series for any other patient.` }) };
    }
  }

  /** The proposal for a series of a study filed here: that patient only, saying why. */
  function studyProposal(node, item, proposal, decisionArea) {
    const patient = proposal.patient;
    const agrees = !proposal.differs.length && !proposal.unknown.length;
    const caution = proposal.differs.length
      ? `The images' ${proposal.differs.join(" and ")} differ${proposal.differs.length === 1 ? "s" : ""} from this patient's: compare them before attaching.`
      : proposal.unknown.length ? `The images carry no ${proposal.unknown.join(" or ")} to confirm this patient: compare them before attaching.` : null;
    return [
      h("p", { class: "worklist-proposal" }, h("strong", { text: "Proposed: " }), sivrLine(patient)),
      h("p", { class: "worklist-study-reason", text: `Other series of this study are filed to ${sivrLine(patient)}. A study belongs to one patient: the institution refuses this series for another.` }),
      caution ? h("p", { class: "warn worklist-reason", text: caution }) : null,
      confirmButton(node, item, patient, agrees ? "rule" : "chosen", decisionArea),
      h("p", { class: "muted" }, "Is the study filed to the wrong patient? Correct it on ",
        h("a", { href: `#/patients/${patient.id}`, text: "that patient's page" }), " first (remove the study's series there)."),
    ];
  }

  /** A study filed to several patients, or to one the toplevel did not answer: nothing the institution would take. */
  function filedElsewhere(proposal) {
    const whom = proposal.filed.map((f) => (f.patient ? sivrLine(f.patient) : `patient ${f.id} (not shown: ${f.error})`)).join("; ");
    return h("p", { class: "warn worklist-study-reason", role: "alert",
      text: `Other series of this study are filed to ${whom}. A study belongs to one patient: the institution refuses this series for ${proposal.filed.length > 1 ? "any patient until the study's filing is corrected" : "another patient"}.` });
  }

  /** The item's proposal (the study's, else the rule's) or the chooser. */
  async function decide(node, item, decisionArea) {
    const turn = (turns.get(decisionArea) || 0) + 1;
    turns.set(decisionArea, turn);
    try {
      const { filed, note } = await filedPatients(item);
      const proposal = await propose(ctx, item.patient, issuer, controller.signal, filed);
      if (turns.get(decisionArea) !== turn) return;
      if (proposal.kind === "study") {
        mount(decisionArea, ...studyProposal(node, item, proposal, decisionArea));
      } else if (proposal.kind === "filed_elsewhere") {
        mount(decisionArea, filedElsewhere(proposal));
      } else if (proposal.kind === "match") {
        mount(decisionArea, note, h("p", { class: "worklist-proposal" }, h("strong", { text: "Proposed (same insurance number, name and birth date): " }),
          sivrLine(proposal.patient)), confirmButton(node, item, proposal.patient, "rule", decisionArea));
      } else {
        mount(decisionArea, note, h("p", { class: "warn worklist-reason", text: `${proposal.reason} Choose the patient.` }),
          chooser(node, item, proposal.candidates, decisionArea));
      }
    } catch (err) {
      if (err.name !== "AbortError" && turns.get(decisionArea) === turn) mount(decisionArea, h("p", { class: "form-error", text: ctx.describeError(err) }));
    }
  }

  function renderItem(node, item) {
    const decisionArea = h("div", { class: "worklist-decision", text: "Looking for the patient…" });
    const study = [item.study.date ? formatDate(isoDate(item.study.date)) : "no study date", item.study.description || null,
      item.study.accession_number ? `accession ${item.study.accession_number}` : null].filter(Boolean).join(" · ");
    const series = [item.series.modality, item.series.description || null,
      `${item.series.count} image${item.series.count === 1 ? "" : "s"}`, `on ${node.name}`].filter(Boolean).join(" · ");
    list.append(h("li", { class: "panel worklist-item", dataset: { record: item.id } },
      h("p", { class: "worklist-dicom" }, h("strong", { text: "In the images: " }), dicomLine(item.patient)),
      h("p", { class: "muted", text: `Study: ${study}` }), h("p", { class: "muted", text: `Series: ${series}` }),
      decisionArea));
    studyOf(item)?.items.push({ node, item, decisionArea });
    decide(node, item, decisionArea);
  }

  mount(ctx.main, h("section", { class: "page" },
    h("div", { class: "page-head" }, h("div", {}, h("h1", { text: "Work list" }),
      h("p", { class: "muted", text: `Series on ${inst.name}'s render nodes that are not on any patient's page yet.` }))),
    problems, list));
  const answers = await Promise.all(nodes.map((node) =>
    ctx.session.fetchJson(node.url, "api/v1/worklist", { params: { limit: 100 }, signal: controller.signal, shape: WORKLIST_PAGE })
      .then((page) => ({ node, page }), (err) => ({ node, err }))));
  let shown = 0;
  for (const { node, page, err } of answers) {
    if (err) {
      if (err.name !== "AbortError") problems.append(h("p", { class: "notice", role: "alert", text: `${node.name}: ${ctx.describeError(err)}` }));
      continue;
    }
    if (page.total > page.items.length) problems.append(h("p", { class: "muted", text: `${node.name}: the ${page.items.length} newest of ${page.total} series are shown; attach them to see the others.` }));
    for (const item of page.items) { renderItem(node, item); shown += 1; }
  }
  if (!shown) list.replaceWith(h("p", { class: "muted", id: "worklist-empty", text: "Nothing to file: every series has its patient." }));
  return () => controller.abort();
}
