// Finding a patient (partial name or insurance number) and creating or editing one (toplevel).

import { h, mount, field, select, formatDate } from "./dom.js";
import { apiPath, labelText } from "./api.js";
import { NEW_PATIENT, PATIENT_LIST, PATIENT_REFERENCE, patientAbout } from "./answers_toplevel.js";

const SEXES = [["F", "Female"], ["M", "Male"], ["O", "Other"], ["U", "Unknown"]];

export function sexLabel(code) {
  const found = SEXES.find(([c]) => c === code);
  return found ? found[1] : code;
}

/** The toplevel's short-lived signed reference to a patient: an institution server stores a finding or
 *  a record only for a patient it names (it cannot ask the toplevel itself). Fetched right before each write. */
export async function patientReference(ctx, patientId) {
  const body = await ctx.session.toplevel(apiPath`api/v1/patients/${patientId}/reference`, { method: "POST", shape: PATIENT_REFERENCE });
  return body.patient_reference;
}

/** "Last, First" as a label (`labelText`): the name a server holds may be of any length. */
export function patientName(p) {
  return labelText(`${p.last_name}, ${p.first_name}`);
}

/** Search by name and, when the text has a digit, by insurance number too; merged by id. */
export async function searchPatients(session, text, signal) {
  const queries = [session.toplevel("api/v1/patients", { params: { q: text, limit: 100 }, signal, shape: PATIENT_LIST })];
  if (/\d/.test(text)) {
    queries.push(session.toplevel("api/v1/patients", { params: { insurance_number: text, limit: 100 }, signal, shape: PATIENT_LIST }));
  }
  const pages = await Promise.all(queries);
  const byId = new Map();
  for (const page of pages.reverse()) for (const p of page.items) byId.set(p.id, p);
  return [...byId.values()];
}

export function patientSearchView(ctx, query) {
  const input = h("input", { type: "search", name: "q", value: query.get("q") || "", autocomplete: "off",
    placeholder: "e.g. Novak or 1234567890" });
  const results = h("div", { class: "results", "aria-live": "polite" });
  let controller = null;

  async function run(text) {
    if (controller) controller.abort();
    if (!text.trim()) {
      mount(results, h("p", { class: "muted", text: "Type part of a name or an insurance number." }));
      return;
    }
    controller = new AbortController();
    const mine = controller;
    mount(results, h("p", { class: "muted", text: "Searching…" }));
    try {
      const patients = await searchPatients(ctx.session, text.trim(), controller.signal);
      if (mine !== controller) return;
      renderResults(patients, text.trim());
    } catch (err) {
      if (err.name === "AbortError") return;
      mount(results, h("p", { class: "form-error", text: ctx.describeError(err) }));
    }
  }

  function renderResults(patients, text) {
    if (!patients.length) {
      mount(results, h("p", { class: "muted", text: `No patient matches “${text}”.` }));
      ctx.announce("No patient found.");
      return;
    }
    const rows = patients.map((p) => h("tr", {},
      h("td", {}, h("a", { href: `#/patients/${p.id}`, text: patientName(p) })),
      h("td", { text: formatDate(p.birth_date) }),
      h("td", { text: sexLabel(p.sex) }),
      h("td", { class: "mono", text: p.insurance_number })));
    mount(results, h("table", { class: "table", id: "patient-results" },
      h("caption", { class: "sr-only", text: "Matching patients" }),
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Name" }), h("th", { scope: "col", text: "Born" }),
        h("th", { scope: "col", text: "Sex" }), h("th", { scope: "col", text: "Insurance no." }))),
      h("tbody", {}, rows)));
    ctx.announce(`${patients.length} patient${patients.length === 1 ? "" : "s"} found.`);
  }

  const form = h("form", { class: "search-form", role: "search" },
    field("Patient name or insurance number", input),
    h("button", { type: "submit", class: "btn btn-primary", text: "Search" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    history.replaceState(null, "", `#/patients?q=${encodeURIComponent(input.value.trim())}`);
    run(input.value);
  });

  mount(ctx.main, h("section", { class: "page" },
    h("div", { class: "page-head" },
      h("h1", { text: "Patients" }),
      h("a", { class: "btn", href: "#/patients/new", text: "New patient" })),
    h("div", { class: "panel" }, form, results)));
  input.focus();
  run(input.value);
  return () => controller && controller.abort();
}

/**
 * Create or edit a patient; after saving go to the patient's page, or to `returnTo` (the work list,
 * where a series waits for the patient just created).
 * @param {any} ctx
 * @param {string | null} patientId
 * @param {string | null} [returnTo]
 */
export async function patientFormView(ctx, patientId, returnTo = null) {
  const patient = patientId ? await ctx.session.toplevel(apiPath`api/v1/patients/${patientId}`, { shape: patientAbout(patientId) }) : null;
  const v = patient || {};
  const first = h("input", { name: "first_name", required: true, value: v.first_name || "", autocomplete: "off" });
  const last = h("input", { name: "last_name", required: true, value: v.last_name || "", autocomplete: "off" });
  const sex = select("sex", SEXES, v.sex || "U");
  const birth = h("input", { name: "birth_date", type: "date", required: true, value: v.birth_date || "", max: new Date().toISOString().slice(0, 10) });
  const insurance = h("input", { name: "insurance_number", required: true, value: v.insurance_number || "", autocomplete: "off", inputmode: "numeric" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary", text: patient ? "Save changes" : "Create patient" });

  const form = h("form", { class: "panel form-grid", novalidate: true },
    field("First name", first), field("Last name", last), field("Sex", sex),
    field("Date of birth", birth), field("Insurance number", insurance),
    error,
    h("div", { class: "actions" }, submit,
      h("a", { class: "btn btn-quiet", href: returnTo || (patient ? `#/patients/${patient.id}` : "#/patients"), text: "Cancel" })));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const missing = [[first, "first name"], [last, "last name"], [birth, "date of birth"], [insurance, "insurance number"]]
      .filter(([el]) => !el.value.trim());
    if (missing.length) {
      error.textContent = `Please fill in: ${missing.map(([, n]) => n).join(", ")}.`;
      error.hidden = false;
      missing[0][0].focus();
      return;
    }
    const body = {
      first_name: first.value.trim(), last_name: last.value.trim(), sex: sex.value,
      birth_date: birth.value, insurance_number: insurance.value.trim(),
    };
    submit.disabled = true;
    try {
      const saved = patient
        ? await ctx.session.toplevel(apiPath`api/v1/patients/${patient.id}`, { method: "PUT", json: body, shape: patientAbout(patient.id) })
        : await ctx.session.toplevel("api/v1/patients", { method: "POST", json: body, shape: NEW_PATIENT });
      ctx.announce(patient ? "Patient saved." : "Patient created.");
      ctx.navigate(returnTo || `#/patients/${saved.id}`);
    } catch (err) {
      error.textContent = err.code === "conflict"
        ? "Another patient already has this insurance number."
        : ctx.describeError(err);
      error.hidden = false;
      submit.disabled = false;
    }
  });

  mount(ctx.main, h("section", { class: "page page-narrow" },
    h("div", { class: "page-head" }, h("h1", { text: patient ? `Edit ${patientName(patient)}` : "New patient" })),
    form));
  first.focus();
  return null;
}
