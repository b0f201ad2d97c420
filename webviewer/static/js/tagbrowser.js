// The DICOM tag browser: the attributes of the instance the active viewport shows (keyword, tag,
// VR, value; sequences open item by item; a filter box), from the node's DICOMweb instance
// metadata. RecordMeta's `slices` name the instance of every frame (sop_instance_uid), so the
// browser follows the slice shown; a reformat or a 3D view shows no single instance.

import { h, mount } from "./dom.js";
import { DICOM_METADATA } from "./answers.js";

const KEYWORDS_URL = "static/dicom-keywords.json";
const MAX_VALUE_CHARS = 240;

/** @type {Promise<{tags: Record<string, string>, repeating: Record<string, string>}>|null} */
let keywordTable = null;

/** The tag -> keyword table (webviewer/dicom_keywords.py), fetched once, when first needed. */
function loadKeywords() {
  if (!keywordTable) {
    keywordTable = fetch(KEYWORDS_URL, { credentials: "omit" }).then((r) => (r.ok ? r.json() : { tags: {}, repeating: {} }))
      .catch(() => ({ tags: {}, repeating: {} }));
  }
  return keywordTable;
}

/** "PatientID" for "00100020"; a repeating group's keyword ("OverlayData" for "60023000"); "" when unknown. */
export function keywordOf(table, tag) {
  if (table.tags[tag]) return table.tags[tag];
  for (const [mask, keyword] of Object.entries(table.repeating)) {
    if ([...mask].every((c, i) => c === "x" || c === tag[i])) return keyword;
  }
  return parseInt(tag.slice(0, 4), 16) % 2 ? "(private)" : "";
}

/** One element's value as text (not sequences). @param {any} element DICOM JSON element */
export function valueText(element) {
  if (element.BulkDataURI || element.InlineBinary) return "(binary data)";
  const values = (element.Value || []).map((v) => {
    if (v && typeof v === "object") return v.Alphabetic || [v.Alphabetic, v.Ideographic, v.Phonetic].filter(Boolean).join("=") || "";
    return String(v);
  });
  const text = values.join("\\");
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS)}…` : text;
}

export class TagBrowser {
  /** @param {any} shell the viewer (viewer.js): ctx, node, meta, active */
  constructor(shell) {
    this.shell = shell;
    this.shownSop = null;
    this.loading = null;
    this.button = h("button", {
      type: "button", class: "btn", id: "tag-browser-toggle", "aria-expanded": "false", "aria-controls": "tag-browser",
      text: "Tags", title: "The DICOM attributes of the image shown (T)", onclick: () => this.toggle(),
    });
    this.filter = h("input", { type: "search", id: "tag-filter", placeholder: "Filter: keyword, tag or value", "aria-label": "Filter the attributes" });
    this.filter.addEventListener("input", () => this.applyFilter());
    this.caption = h("p", { class: "muted", id: "tag-browser-caption" });
    this.table = h("table", { class: "tag-table", id: "tag-table" });
    this.panel = h("section", { class: "tag-browser", id: "tag-browser", "aria-label": "DICOM tags", hidden: true },
      h("h2", { text: "DICOM tags of the image shown" }), this.caption, this.filter, this.table);
  }

  get open() {
    return !this.panel.hidden;
  }

  toggle() {
    this.panel.hidden = this.open;
    this.button.setAttribute("aria-expanded", String(this.open));
    if (this.open) this.sync(this.shell.active);
  }

  /** The instance the active viewport shows, or null (a reformat, 3D, no catalogue entry). @param {any} vp */
  instanceOf(vp) {
    if (!vp || vp.state.plane !== "native") return null;
    const slice = Array.isArray(vp.meta.slices) ? vp.meta.slices[vp.index()] : null;
    return slice && slice.sop_instance_uid ? { ...slice, node: vp.node, study_uid: vp.meta.study_uid,
      series_uid: vp.meta.series_uid } : null;
  }

  /** Follow the active viewport: load the attributes of the instance it shows (when open). @param {any} vp */
  sync(vp) {
    if (!this.open) return;
    const slice = this.instanceOf(vp);
    if (!slice) {
      this.shownSop = null;
      this.caption.textContent = vp && vp.state.plane !== "native"
        ? "A reformat or a 3D view is made from many instances: choose the Slices view to see one's attributes."
        : "The node does not name the instance of this image.";
      this.table.replaceChildren();
      return;
    }
    if (slice.sop_instance_uid === this.shownSop) return;
    this.shownSop = slice.sop_instance_uid;
    this.load(slice);
  }

  async load(slice) {
    const sop = slice.sop_instance_uid;
    this.caption.textContent = `Loading instance ${slice.instance ?? ""}…`;
    try {
      const [table, metadata] = await Promise.all([loadKeywords(), this.shell.ctx.session.fetchJson(slice.node.url,
        `dicomweb/studies/${slice.study_uid}/series/${slice.series_uid}/instances/${sop}/metadata`, { shape: DICOM_METADATA })]);
      if (sop !== this.shownSop) return;   // the viewer moved on meanwhile
      const frame = slice.frame_number > 1 ? ` · frame ${slice.frame_number}` : "";
      this.caption.textContent = `Image ${slice.instance ?? "–"}${frame} · SOP Instance UID ${sop}`;
      mount(this.table, h("thead", {}, h("tr", {}, ...["Keyword", "Tag", "VR", "Value"].map((t) => h("th", { text: t })))),
        h("tbody", {}, ...rows(table, metadata[0] || {})));
      this.applyFilter();
    } catch (err) {
      if (sop === this.shownSop && !err.isAuthFailure) this.caption.textContent = `The attributes could not be read: ${this.shell.ctx.describeError(err)}`;
    }
  }

  /** Show the rows whose keyword, tag or value (a sequence's items included) contain the filter text. */
  applyFilter() {
    const q = this.filter.value.trim().toLowerCase().replace(/[(),]/g, "");
    for (const row of /** @type {NodeListOf<HTMLElement>} */ (this.table.querySelectorAll("tbody > tr"))) {
      row.hidden = Boolean(q) && !(row.dataset.search || "").includes(q);
    }
  }
}

/** The rows of one dataset (DICOM JSON object), tags in order; sequences hold their items' tables. */
function rows(table, dataset) {
  return Object.keys(dataset).sort().map((tag) => {
    const element = dataset[tag];
    const keyword = keywordOf(table, tag);
    const tagText = `(${tag.slice(0, 4)},${tag.slice(4)})`;
    let value;
    let search = `${keyword} ${tag} ${tag.slice(0, 4)}${tag.slice(4)}`.toLowerCase();
    if (element.vr === "SQ") {
      const items = element.Value || [];
      value = h("details", {}, h("summary", { text: `${items.length} item${items.length === 1 ? "" : "s"}` }),
        ...items.map((item, i) => h("div", { class: "tag-item" }, h("div", { class: "muted", text: `Item ${i + 1}` }),
          h("table", { class: "tag-table nested" }, h("tbody", {}, ...rows(table, item || {}))))));
      search += ` ${value.textContent || ""}`.toLowerCase();
    } else {
      value = valueText(element);
      search += ` ${value}`.toLowerCase();
    }
    return h("tr", { dataset: { tag, keyword, search } },
      h("td", { class: "tag-keyword", text: keyword }), h("td", { class: "tag-tag", text: tagText }),
      h("td", { class: "tag-vr", text: element.vr || "" }), h("td", { class: "tag-value" }, value));
  });
}
