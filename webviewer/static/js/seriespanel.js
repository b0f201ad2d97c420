// The viewer's series panel: every series of the patient (all institutions), grouped by study,
// newest first, the study open in the viewer marked "current" and earlier ones "prior", each with
// its node's thumbnail. A series is dragged onto a viewport to show it there, or (touch,
// keyboard) clicked to show it in the active viewport. On a phone the panel is a drawer over the
// image and a tap shows the series in the one viewport.
//
// The data path is the patient page's (studies.js): the registries say which series are the
// patient's, each series' node describes it (seriesDetails) and paints its thumbnail
// (showThumbnail), a few node requests at a time (NODE_REQUESTS).

import { h, mount, formatDate } from "./dom.js";
import { queryAllInstitutions } from "./federation.js";
import { identityOf } from "./identity.js";
import { OpenRecord } from "./series.js";
import { NODE_REQUESTS, isoDate, limiter, seriesDetails, showThumbnail, studyKey } from "./studies.js";
import { apiPath, labelText } from "./api.js";
import { patientRecordsShape, recordShape } from "./answers.js";

/** The drag data type of a series card: its key (OpenRecord.key). */
const DRAG_TYPE = "application/x-sivr-series";

/**
 * A series of the patient that its node described.
 * @typedef {{key: string, inst: any, record: any, node: any, meta: any, card?: HTMLElement}} SeriesEntry
 */

/** Date then time of a series' study, as studies.js sorts studies. @param {any} meta */
export function studyKeyOf(meta) {
  return studyKey({ date: isoDate(meta.study_date), time: meta.study_time || "" });
}

/** What the panel says its series do, on a phone (taps) or a wider screen. @param {boolean} phone */
function hintFor(phone) {
  return phone ? "Tap a series to show it." : "Drag a series onto a viewport, or click it to show it in the active one.";
}

export class SeriesPanel {
  /**
   * @param {any} ctx @param {any} viewer the viewer shell (viewer.js)
   * @param {string|null} patientId the SIVR patient whose series are listed
   */
  constructor(ctx, viewer, patientId) {
    this.ctx = ctx;
    this.viewer = viewer;
    this.patientId = patientId;
    this.controller = new AbortController();
    this.run = limiter(NODE_REQUESTS);
    /** @type {Map<string, SeriesEntry>} */
    this.entries = new Map();
    this.unavailable = 0;   // series registered for the patient that their node could not describe
    this.list = h("div", { class: "panel-studies" }, h("p", { class: "muted", text: "Loading the patient's series…" }));
    const open = !viewer.phone;
    this.element = h("aside", { class: "series-panel", id: "series-panel", "aria-label": "Series of the patient", hidden: !open },
      h("div", { class: "series-panel-head" },
        h("h2", { text: "Series" }),
        h("button", { type: "button", class: "btn btn-small btn-quiet", text: "×", "aria-label": "Close the series panel", onclick: () => this.setOpen(false) })),
      this.hint = h("p", { class: "muted panel-hint", text: hintFor(viewer.phone) }),
      this.list);
    this.toggle = h("button", {
      type: "button", class: "btn", id: "series-toggle", "aria-expanded": String(open), "aria-controls": "series-panel",
      text: "☰ Series", onclick: () => this.setOpen(this.element.hidden),
    });
    /** @type {Map<Element, SeriesEntry>} */
    this.watched = new Map();
    this.observer = new IntersectionObserver((seen) => {
      for (const item of seen) {
        const entry = item.isIntersecting ? this.watched.get(item.target) : null;
        if (!entry) continue;
        this.observer.unobserve(item.target);
        this.watched.delete(item.target);
        showThumbnail(this.ctx, entry.node, entry.meta, item.target.querySelector("img"), item.target, this.run);
      }
    }, { rootMargin: "100px" });
    /** @type {(entries: SeriesEntry[]) => void} */
    let resolve = () => {};
    /** @type {Promise<SeriesEntry[]>} every series the nodes described, once all have answered */
    this.ready = new Promise((done) => { resolve = done; });
    this.resolveReady = resolve;
  }

  /** The screen became a phone's (the panel is then a drawer over the image: closed) or a wider
   *  one's (a panel beside the viewports: open, as the viewer opens there). @param {boolean} phone */
  fitScreen(phone) {
    this.hint.textContent = hintFor(phone);
    this.setOpen(!phone);
  }

  setOpen(open) {
    this.element.hidden = !open;
    this.toggle.setAttribute("aria-expanded", String(open));
  }

  /** Ask the registries and the nodes; the panel fills in as they answer. Never throws: a
   *  failure is said in the panel, and `ready` resolves with the series listed so far. */
  async load() {
    try {
      await this.fill();
    } catch (err) {
      if (this.controller.signal.aborted) return;
      mount(this.list, h("p", { class: "warn", text: `The patient's series cannot be listed: ${this.ctx.describeError(err)}` }));
      this.resolveReady([...this.entries.values()]);
    }
  }

  async fill() {
    const signal = this.controller.signal;
    if (!this.patientId) {
      mount(this.list, h("p", { class: "muted", text: "The viewer was opened without a patient, so the patient's other series are not listed." }));
      this.resolveReady([]);
      return;
    }
    const pending = [];
    const silent = [];
    await queryAllInstitutions(this.ctx, "api/v1/records", { patient_id: this.patientId }, patientRecordsShape(this.patientId), (inst, result) => {
      if (result.error) { silent.push(inst.name); return; }
      for (const record of result.items) {
        pending.push(this.run(() => seriesDetails(this.ctx, inst, record, signal)).then(({ node, meta }) => {
          if (signal.aborted) return;
          if (!node || !meta) { this.unavailable += 1; return; }
          const key = OpenRecord.key(record.node_id, record.id);
          this.entries.set(key, { key, inst, record, node, meta });
          this.render();
        }));
      }
    }, signal);
    await Promise.all(pending);
    if (signal.aborted) return;
    this.render(silent);
    this.list.dataset.complete = "true";
    this.resolveReady([...this.entries.values()]);
  }

  /** The studies with their cards, newest first; "current" and "prior" relative to the viewer's record. */
  render(silent = []) {
    const current = this.viewer.meta;
    const here = studyKeyOf(current);
    const studies = new Map();
    for (const entry of this.entries.values()) {
      const uid = entry.meta.study_uid || entry.key;
      if (!studies.has(uid)) studies.set(uid, []);
      studies.get(uid).push(entry);
    }
    const order = [...studies.values()].sort((a, b) => studyKeyOf(b[0].meta).localeCompare(studyKeyOf(a[0].meta)));
    const sections = order.map((entries) => {
      const m = entries[0].meta;
      const isCurrent = m.study_uid === current.study_uid;
      const isPrior = !isCurrent && isoDate(m.study_date) && isoDate(current.study_date) && studyKeyOf(m) < here;
      const title = [formatDate(isoDate(m.study_date)) || "Undated study", labelText(m.study_description)].filter(Boolean).join(" · ");
      entries.sort((a, b) => (a.meta.series_number ?? Infinity) - (b.meta.series_number ?? Infinity));
      return h("section", { class: `panel-study${isPrior ? " study-prior" : ""}`, dataset: { study: m.study_uid || "" }, "aria-label": title },
        h("h3", {}, h("span", { text: title }), isCurrent ? h("span", { class: "badge badge-ok", text: "current" }) : null,
          isPrior ? h("span", { class: "badge badge-prior", text: "prior" }) : null),
        entries.map((entry) => this.card(entry)));
    });
    const notes = [
      this.unavailable ? `${this.unavailable} series could not be described by their render node.` : null,
      silent.length ? `Not answering: ${silent.join(", ")}.` : null,
    ].filter(Boolean).map((text) => h("p", { class: "muted", text }));
    if (!sections.length && this.list.dataset.complete !== "true" && !silent.length) return;
    mount(this.list, sections.length ? sections : h("p", { class: "muted", text: "No series to list." }), notes);
  }

  /** The card of a series (made once, so its thumbnail is fetched once). @param {SeriesEntry} entry */
  card(entry) {
    if (entry.card) return entry.card;
    const m = entry.meta;
    const name = labelText(m.series_description || m.description || "Series");
    const thumb = h("span", { class: "series-thumb-link" }, h("img", { class: "series-thumb", alt: "", width: 72, height: 72, decoding: "async" }));
    const card = h("button", {
      type: "button", class: "panel-series", draggable: "true", dataset: { record: entry.record.id, key: entry.key },
      "aria-label": `Show ${m.modality} ${name} (${formatDate(isoDate(m.study_date)) || "undated"})`,
      title: "Drag onto a viewport, or click to show it in the active one",
      onclick: () => this.pick(entry, this.viewer.active),
    }, thumb, h("span", { class: "panel-series-text" },
      h("strong", { text: `${m.modality || ""} · ${name}` }),
      h("span", { class: "muted", text: [m.series_number != null ? `Se ${m.series_number}` : null, `${m.files} image${m.files === 1 ? "" : "s"}`].filter(Boolean).join(" · ") })));
    card.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData(DRAG_TYPE, entry.key);
      event.dataTransfer.effectAllowed = "copy";
    });
    this.watched.set(thumb, entry);
    this.observer.observe(thumb);
    entry.card = card;
    return card;
  }

  /** Viewports of `grid` take a series dropped on them. @param {HTMLElement} grid */
  bindDrop(grid) {
    const target = (event) => {
      const el = /** @type {Element} */ (event.target);
      return event.dataTransfer && event.dataTransfer.types.includes(DRAG_TYPE) && el.closest ? el.closest(".viewport") : null;
    };
    const unmark = () => { for (const el of grid.querySelectorAll(".drop-target")) el.classList.remove("drop-target"); };
    grid.addEventListener("dragover", (event) => {
      const root = target(event);
      if (!root) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      if (!root.classList.contains("drop-target")) { unmark(); root.classList.add("drop-target"); }
    });
    grid.addEventListener("dragleave", (event) => { if (!grid.contains(/** @type {Node} */ (event.relatedTarget))) unmark(); });
    grid.addEventListener("drop", (event) => {
      const root = target(event);
      unmark();
      if (!root) return;
      event.preventDefault();
      const vp = this.viewer.viewports.find((v) => v.root === root);
      const entry = this.entries.get(event.dataTransfer.getData(DRAG_TYPE));
      if (vp && entry) this.pick(entry, vp);
    });
  }

  /** Show `entry` in viewport `vp` and make it the active one. @param {SeriesEntry} entry @param {any} vp */
  async pick(entry, vp) {
    if (this.viewer.phone) this.setOpen(false);   // the drawer covers the image: it goes at once
    try {
      const record = await this.open(entry);
      if (this.viewer.destroyed || !this.viewer.viewports.includes(vp)) return;
      this.viewer.showRecord(vp, record);
      this.viewer.activate(vp);
      this.ctx.announce(`Viewport ${vp.slot + 1}: ${record.meta.modality} ${record.meta.series_description || record.meta.description || ""}.`);
    } catch (err) {
      if (!err.isAuthFailure) this.ctx.showAlert(`The series cannot be shown: ${this.ctx.describeError(err)}`);
    }
  }

  /**
   * The OpenRecord of a series: the viewer's if it is open already, else its full RecordMeta from
   * its node (slices and plane geometry), compared with the viewer's SIVR patient.
   * @param {SeriesEntry} entry @returns {Promise<OpenRecord>}
   */
  async open(entry) {
    const known = this.viewer.records.get(entry.key);
    if (known) return known;
    const meta = await this.ctx.session.fetchJson(entry.node.url, apiPath`api/v1/records/${entry.record.id}`, { shape: recordShape(entry.record.id) });
    const base = this.viewer.identity;
    const identity = base.patient ? identityOf(base.patient, base.fromPage, meta) : base;
    return new OpenRecord(this.ctx, entry.node, meta, identity, entry.inst.id);
  }

  destroy() {
    this.controller.abort();
    this.observer.disconnect();
  }
}
