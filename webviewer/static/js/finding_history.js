// A finding's history: what it said before each change, who changed it and when
// (`api/v1/findings/{id}/versions` at the institution that holds it). A colleague may have acted on
// an earlier wording; the patient page says a finding was changed and links here.

import { h, mount, formatDate } from "./dom.js";
import { apiPath, labelText } from "./api.js";
import { findingVersionsShape } from "./answers.js";
import { patientName } from "./patients.js";

/** How each change reads in the list. */
const CHANGE_TEXT = {
  update: "edited",
  link: "a record attached",
  unlink: "a record detached",
  delete: "deleted",
};

export async function findingHistoryView(ctx, patientId, institutionId, findingId) {
  const [patient, institution] = await Promise.all([
    ctx.session.toplevel(apiPath`api/v1/patients/${patientId}`),
    ctx.dir.institution(institutionId),
  ]);
  // pages of the institution's own size (PAGE_DEFAULT, daemons/institution/finding_history.py): `before` pages back
  const page = (before = null) => ctx.session.fetchJson(institution.server_url, apiPath`api/v1/findings/${findingId}/versions`,
    { params: { before }, shape: findingVersionsShape(findingId, before) });
  const history = await page();
  const list = h("ol", { class: "finding-versions", reversed: true });
  const more = h("button", { type: "button", class: "btn btn-quiet", text: "Show older changes" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  let shown = 0;
  let oldest = null;
  // newest first, as a reader looks for the last change; a page answers the newest versions before `oldest`
  const add = (items) => {
    list.append(...[...items].reverse().map(versionItem));
    shown += items.length;
    oldest = items.length ? items[0].version : oldest;
    more.hidden = !items.length || shown >= history.total;
    more.textContent = `Show older changes (${history.total - shown} more)`;
  };
  more.onclick = async () => {
    more.disabled = true;
    error.hidden = true;
    try {
      add((await page(oldest)).items);
    } catch (err) {
      error.textContent = ctx.describeError(err);
      error.hidden = false;
    } finally {
      more.disabled = false;
    }
  };
  add(history.items);
  mount(ctx.main, h("section", { class: "page page-narrow" },
    h("div", { class: "page-head" }, h("div", {},
      h("h1", { text: "Finding history" }),
      h("p", { class: "muted", text: `${patientName(patient)} · ${institution.name}` +
        (history.deleted ? " · this finding was deleted" : ` · now at version ${history.current_version}`) })),
      h("div", { class: "actions" }, h("a", { class: "btn btn-quiet", href: `#/patients/${patient.id}`, text: "Back to the patient" }))),
    history.total
      ? [list, more, error]
      : h("p", { class: "muted", text: "This finding has not been changed since it was written." })));
}

function versionItem(v) {
  const sections = [["Findings", v.findings], ["Conclusion", v.conclusion], ["Recommendation", v.recommendation]]
    .filter(([, text]) => text);
  return h("li", { class: "finding finding-version", dataset: { version: String(v.version) } },
    h("header", { class: "finding-head" },
      h("h4", { text: `Version ${v.version}: ${labelText(v.description || "Finding")}` }),
      h("span", { class: "muted", text: `written ${formatDate(v.written_at)} by ${labelText(v.author_name)}; ` +
        `${CHANGE_TEXT[v.change]} ${formatDate(v.changed_at)} by ${labelText(v.changed_by_name)}` })),
    h("p", { class: "muted", text: `Date of the finding: ${formatDate(v.date)} · ${v.records.length} record${v.records.length === 1 ? "" : "s"} attached` }),
    sections.map(([title, text]) => h("div", { class: "finding-part" },
      h("span", { class: "finding-label", text: title }), h("p", { text }))));
}
