// The patient's series at one institution, grouped by study (newest first, so priors show as the
// older studies) with a server-rendered thumbnail per series.
//
// Where it comes from (docs/architecture.md, "The patient page's study list"): the institution's
// registry says which series belong to this SIVR patient and on which node they are; each series'
// node says what DICOM says of it (RecordMeta: study uid, date, time and description, series
// number, instance count). Both are asked by the browser, never by one backend of another. Node
// requests run a few at a time (NODE_REQUESTS), so 50 series do not queue 100 requests at once,
// and thumbnails are fetched only when their card scrolls into view.

import { h, formatDate } from "./dom.js";
import { recordCard } from "./record_actions.js";
import { viewerHref, recordLabel } from "./federation.js";
import { apiPath, labelText, readImage } from "./api.js";
import { recordShape } from "./answers.js";

/** How many requests to render nodes the study list runs at once (metadata and thumbnails). */
export const NODE_REQUESTS = 6;
/** How long cards may keep arriving (and moving each other down) before their thumbnails are
 *  watched for visibility; all are watched at once when the last card is placed. */
const SETTLE_MS = 300;
/** How long a thumbnail of a series that its node is still loading (409 with Retry-After) is
 *  asked for again: a busy node may take tens of seconds to decode a series it had not loaded. */
const THUMBNAIL_PATIENCE_MS = 60000;
/** The box a thumbnail is asked for in (the node's own default; asked for by name, so the
 *  answer's size can be checked against it, api.js `readImage`). */
const THUMBNAIL_BOX = { width: 128, height: 128 };
const UNKNOWN = "unknown";

/** A queue running at most `size` tasks at once; `run(task)` resolves with the task's result. */
export function limiter(size) {
  let active = 0;
  const waiting = [];
  const next = () => {
    if (active >= size || !waiting.length) return;
    active += 1;
    const { task, resolve, reject } = waiting.shift();
    task().then(resolve, reject).finally(() => { active -= 1; next(); });
  };
  return (task) => new Promise((resolve, reject) => { waiting.push({ task, resolve, reject }); next(); });
}

/** `YYYYMMDD` (DICOM DA) or `YYYY-MM-DD` as `YYYY-MM-DD`; null when neither. */
export function isoDate(value) {
  const digits = String(value || "").replaceAll("-", "");
  return /^\d{8}$/.test(digits) ? `${digits.slice(0, 4)}-${digits.slice(4, 6)}-${digits.slice(6, 8)}` : null;
}

/** The sort key of a study: date then time, so the newest sorts last in ascending order. */
export function studyKey(study) {
  return `${study.date || ""}T${study.time || ""}`;
}

/**
 * The study list of `records` (one institution's registry entries for `patient`), filled in as
 * the nodes answer. `onEmpty()` runs when the last card is deleted. Answers the element.
 */
export function studyList(ctx, inst, patient, records, signal, onEmpty) {
  const list = h("div", { class: "studies" });
  const studies = new Map();   // study uid (or UNKNOWN) -> {uid, date, time, element, cards, modalities}
  const run = limiter(NODE_REQUESTS);
  let left = records.length;
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      entry.target.dispatchEvent(new Event("visible"));
    }
  }, { rootMargin: "200px" });
  signal.addEventListener("abort", () => observer.disconnect());
  // A card placed above others pushes them down: a thumbnail is watched only once the list has
  // settled, so cards that were on screen for an instant do not fetch theirs.
  const unwatched = [];
  let settle = 0;
  const watchAll = () => {
    clearTimeout(settle);
    settle = 0;
    for (const thumb of unwatched.splice(0)) observer.observe(thumb);
  };
  const watch = (thumb) => {
    unwatched.push(thumb);
    if (!settle) settle = setTimeout(watchAll, SETTLE_MS);
  };

  const studyFor = (meta, record) => {
    const uid = meta && meta.study_uid ? meta.study_uid : UNKNOWN;
    let study = studies.get(uid);
    if (study) return study;
    study = {
      uid, date: isoDate(meta ? meta.study_date : record.study_date), time: meta ? meta.study_time || "" : "",
      description: meta ? labelText(meta.study_description) : "", modalities: new Set(),
      cards: h("div", { class: "series-cards" }), facts: h("span", { class: "muted" }),
    };
    const title = uid === UNKNOWN ? "Study unknown" : [formatDate(study.date) || "Undated study", study.description].filter(Boolean).join(" · ");
    study.element = h("section", { class: "study", dataset: { study: uid }, "aria-label": title },
      h("header", { class: "study-head" }, h("h4", { text: title }), study.facts), study.cards);
    studies.set(uid, study);
    // newest first; a study the nodes could not name goes last
    const order = [...studies.values()].sort((a, b) => Number(a.uid === UNKNOWN) - Number(b.uid === UNKNOWN) ||
      studyKey(b).localeCompare(studyKey(a)));
    list.replaceChildren(...order.map((s) => s.element));
    order.forEach((s, i) => s.element.classList.toggle("study-prior", i > 0 && s.uid !== UNKNOWN));
    return study;
  };

  const describeStudy = (study) => {
    const count = study.cards.children.length;
    study.facts.textContent = `${[...study.modalities].sort().join(", ")} · ${count} series`;
  };

  const place = (record, meta, node) => {
    const study = studyFor(meta, record);
    const thumb = thumbnailSlot(ctx, inst, patient, record, meta, node, run);
    const facts = h("p", { class: "series-facts muted", text: seriesFacts(record, meta, node) });
    const card = recordCard(ctx, inst, patient, record, () => {
      card.remove();
      describeStudy(study);
      if (!study.cards.children.length) {
        study.element.remove();
        studies.delete(study.uid);
      }
      if (!list.querySelector("[data-record]")) onEmpty();
    }, thumb, facts);
    card.dataset.seriesNumber = String(meta && meta.series_number != null ? meta.series_number : "");
    study.modalities.add((meta && meta.modality) || record.modality);
    // by series number, as the scanner numbered them; unnumbered series last
    const number = (el) => (el.dataset.seriesNumber === "" ? Infinity : Number(el.dataset.seriesNumber));
    const after = [...study.cards.children].find((el) => number(el) > number(card));
    study.cards.insertBefore(card, after || null);
    describeStudy(study);
    if (meta) watch(thumb);
  };

  for (const record of records) {
    run(() => seriesDetails(ctx, inst, record, signal)).then(({ node, meta }) => {
      if (signal.aborted) return;
      place(record, meta, node);
      left -= 1;
      if (!left) {
        watchAll();
        list.dataset.complete = "true";
      }
    });
  }
  return list;
}

/**
 * What the series' node says of a registered record (RecordMeta summary) and the node itself;
 * null for either that cannot be had (node unknown or down, series gone): the series is then
 * listed under "Study unknown" with the registry's labels. Never throws.
 */
export async function seriesDetails(ctx, inst, record, signal) {
  const node = await ctx.dir.node(inst.id, record.node_id).catch(() => null);
  const meta = node ? await ctx.session.fetchJson(node.url, apiPath`api/v1/records/${record.id}`, { signal, params: { detail: "summary" }, shape: recordShape(record.id) }).catch(() => null) : null;
  return { node, meta };
}

/** One line of what the node says of a series: number, modality, description, instances, node. */
export function seriesFacts(record, meta, node) {
  const parts = [
    meta && meta.series_number != null ? `Series ${meta.series_number}` : null,
    (meta && meta.modality) || record.modality,
    meta && meta.series_description ? labelText(meta.series_description) : null,
    meta ? `${meta.files} instance${meta.files === 1 ? "" : "s"}` : "details unavailable from its node",
    node ? `on ${node.name}` : null,
  ];
  return parts.filter(Boolean).join(" · ");
}

/**
 * The thumbnail of a card: a link to the viewer (hidden from assistive technology, which has the
 * card's "Open" link) holding the node's DICOMweb series thumbnail, fetched when the card is
 * first seen, with the node token, through the browser's HTTP cache.
 */
function thumbnailSlot(ctx, inst, patient, record, meta, node, run) {
  const img = h("img", { class: "series-thumb", alt: "", width: 128, height: 128, decoding: "async" });
  const slot = h("a", { class: "series-thumb-link", href: viewerHref(inst.id, record.node_id, record.id, patient.id),
    "aria-hidden": "true", tabindex: "-1", title: `Open ${recordLabel(record)}` }, img);
  if (!meta || !node) {
    slot.classList.add("thumb-none");
    return slot;
  }
  slot.addEventListener("visible", () => showThumbnail(ctx, node, meta, img, slot, run), { once: true });
  return slot;
}

/**
 * Put the node's DICOMweb series thumbnail (`meta` is the series' RecordMeta) into `img`, with
 * the node token, through the browser's HTTP cache, as one task of `run` (a limiter); `slot`
 * gets the class "thumb-shown" once it is painted, or "thumb-none" and the reason as its title.
 * The patient page's cards and the viewer's series panel both show thumbnails this way.
 */
export function showThumbnail(ctx, node, meta, img, slot, run) {
  const path = `dicomweb/studies/${meta.study_uid}/series/${meta.series_uid}/thumbnail`;
  return run(async () => {
    const started = Date.now();
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await ctx.session.fetchRaw(node.url, path,
          { cache: "default", headers: { Accept: "image/jpeg" }, params: { viewport: `${THUMBNAIL_BOX.width},${THUMBNAIL_BOX.height}` } });
      } catch (err) {
        // the node answers 409 while the series is still being loaded: ask again when it says
        if (err.status !== 409 || Date.now() - started > THUMBNAIL_PATIENCE_MS) throw err;
        const wait = 1000 * Math.max(err.details.retryAfter || 0, Math.min(attempt, 3));
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }).then((response) => readImage(response, THUMBNAIL_BOX)).then((blob) => {
    const url = URL.createObjectURL(blob);
    img.addEventListener("load", () => { URL.revokeObjectURL(url); slot.classList.add("thumb-shown"); }, { once: true });
    img.src = url;
  }).catch((err) => {
    slot.classList.add("thumb-none");
    slot.title = `No preview: ${ctx.describeError(err)}`;
  });
}
