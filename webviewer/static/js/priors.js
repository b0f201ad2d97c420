// Comparison with priors: the patient's most recent earlier study opened beside the current one
// (1×2), its series that best matches the one on screen, scrolling linked by patient position.
// A prior lies in another frame of reference (another day, often another scanner), where the
// same millimetre is another place in the patient: the reader puts both viewports on the same
// anatomy and aligns them (key A), which keeps that offset while scrolling (linking.js).

import { isoDate } from "./studies.js";
import { studyKeyOf } from "./seriespanel.js";
import { slicePosition } from "./linking.js";
import { formatDate } from "./dom.js";

/** The patient axis a series' frame index runs along (its stack direction): z, y or x. */
const AXIS_OF_DIRECTION = { S: "z", I: "z", A: "y", P: "y", L: "x", R: "x" };

function words(text) {
  return new Set(String(text || "").toLowerCase().split(/[^a-z0-9.]+/).filter(Boolean));
}

/** How alike two descriptions are: shared words over all words (0..1). */
function similarity(a, b) {
  const x = words(a);
  const y = words(b);
  if (!x.size || !y.size) return 0;
  let shared = 0;
  for (const w of x) if (y.has(w)) shared += 1;
  return shared / (x.size + y.size - shared);
}

function axisOf(meta) {
  return AXIS_OF_DIRECTION[String(meta.stack_direction || "").charAt(0)] || null;
}

/**
 * The prior to compare `current` (RecordMeta) with: among the patient's series (the panel's
 * entries) of the same modality in dated studies before the current one, those of the most
 * recent such study, the best matching first by orientation (the same stack axis) and
 * description, then by series number. Null when there is none.
 * @template {{meta: any}} T @param {any} current @param {T[]} entries @returns {T|null}
 */
export function priorFor(current, entries) {
  const here = studyKeyOf(current);
  if (!isoDate(current.study_date)) return null;
  const earlier = entries.filter((e) => e.meta.study_uid !== current.study_uid && isoDate(e.meta.study_date)
    && studyKeyOf(e.meta) < here && (e.meta.modality || "").toUpperCase() === (current.modality || "").toUpperCase());
  if (!earlier.length) return null;
  const latest = earlier.reduce((a, b) => (studyKeyOf(b.meta) > studyKeyOf(a.meta) ? b : a)).meta.study_uid;
  const description = (m) => m.series_description || m.description;
  // the same orientation outweighs any description (similarity is at most 1)
  const score = (m) => (axisOf(m) && axisOf(m) === axisOf(current) ? 2 : 0) + similarity(description(m), description(current));
  return earlier.filter((e) => e.meta.study_uid === latest)
    .sort((a, b) => score(b.meta) - score(a.meta) || (a.meta.series_number ?? Infinity) - (b.meta.series_number ?? Infinity))[0];
}

/**
 * "Compare with prior" (key C): the active viewport's series on the left, the prior's best
 * match on the right in the same view, scrolling linked (within one frame of reference at once;
 * across frames once aligned).
 * @param {any} viewer the viewer shell (viewer.js)
 */
export async function compareWithPrior(viewer) {
  if (viewer.phone) return;
  const vp = viewer.active;
  const current = vp.record;
  const entries = await viewer.panel.ready;
  const prior = priorFor(current.meta, entries);
  if (!prior) {
    viewer.ctx.showAlert(`This patient has no earlier study with a ${current.meta.modality || "matching"} series to compare with.`, "info");
    return;
  }
  let record;
  try {
    record = await viewer.panel.open(prior);
  } catch (err) {
    if (!err.isAuthFailure) viewer.ctx.showAlert(`The prior cannot be opened: ${viewer.ctx.describeError(err)}`);
    return;
  }
  if (viewer.destroyed) return;
  const plane = vp.state.plane === "3d" ? "native" : vp.state.plane;
  const index = vp.index();
  viewer.setLayout("1x2");
  const [left, right] = viewer.viewports;
  if (left.record !== current || left.state.plane !== plane) {
    viewer.showRecord(left, current, plane);
    left.setIndex(index);
  }
  viewer.showRecord(right, record, plane);
  viewer.activate(left);
  if (!viewer.settings.sync) viewer.toggleSync(false);   // said below, with the prior
  else viewer.scrolled(left);
  viewer.refreshCorners();
  viewer.ctx.announce(`Prior of ${formatDate(isoDate(record.meta.study_date))} beside the current study; scrolling is linked.`);
}

/**
 * "Align" (key A): the slices now on screen show the same place; the offset between their frames
 * of reference is kept while scrolling, and scrolling is linked.
 * @param {any} viewer
 */
export function alignViews(viewer) {
  const pos = slicePosition(viewer.active);
  if (!pos) {
    viewer.ctx.announce("The active view has no slice positions to align.");
    return;
  }
  const others = viewer.viewports.filter((vp) => vp !== viewer.active).map(slicePosition).filter(Boolean);
  if (!viewer.offsets.align(pos, others)) {
    // one message, the one that is true: nothing changed (scrolling is not linked by it either)
    viewer.ctx.announce("Nothing to align: the other views show the same frame of reference or another plane.");
    return;
  }
  if (!viewer.settings.sync) viewer.toggleSync(false);   // said below, with the alignment
  viewer.refreshCorners();
  viewer.drawReferenceLines();
  viewer.ctx.announce("Aligned: the slices on screen are taken as the same place; scrolling is linked.");
}

/** Forget every offset (Shift+A): other frames of reference are no longer linked. @param {any} viewer */
export function clearAlignment(viewer) {
  viewer.offsets.clear();
  viewer.refreshCorners();
  viewer.drawReferenceLines();
  viewer.ctx.announce("Offsets cleared.");
}
