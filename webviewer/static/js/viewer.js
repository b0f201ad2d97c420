// The image viewer shell: opens a record on a serving node, lays out its viewports (1×1, 1×2,
// 2×1, 2×2; layouts.js), and holds the toolbar, the keys and the loading status. Each viewport
// (viewport.js) has its own view, slice, window, zoom and requests; the toolbar and the keys act
// on the ACTIVE one (highlighted; a click, a touch or focus makes a viewport active). Each
// viewport shows a record of its own (series.js): the series panel (seriespanel.js) puts another
// series of the patient into one, and "Compare with prior" (priors.js) opens the prior beside it.
// Every image is rendered by the render node: the browser only asks for pictures and shows them.

import { h, mount, select } from "./dom.js";
import { ApiError, apiPath } from "./api.js";
import { PRESETS, recordShape } from "./answers.js";
import { ImageCache } from "./imagecache.js";
import { patientIdentity, identityPanel } from "./identity.js";
import { clamp, planeInfo } from "./geometry.js";
import { LAYOUTS, hangingProtocol, viewportCount } from "./layouts.js";
import { slicePosition, followingIndex, referenceOn, linkNote, frameOf, keptOffset, FrameOffsets } from "./linking.js";
import { OpenRecord } from "./series.js";
import { SeriesPanel } from "./seriespanel.js";
import { compareWithPrior, alignViews, clearAlignment } from "./priors.js";
import { middleFrame, planesFor } from "./stacks.js";
import { Timers } from "./timers.js";
import {
  Viewport, customWindow, keptNumber, keptPictureTurn, keptSlab, keptTurn, namedWindows, slabParam, slabWidth, turnParam, windowParam,
} from "./viewport.js";
import { imageAction, imageActionForKey, imageToolGroup } from "./imagetools.js";
import { KeyImages } from "./keyimages.js";
import { NodeRetry } from "./noderetry.js";
import { exportView } from "./export.js";
import { TagBrowser } from "./tagbrowser.js";
import { VolumePresets } from "./volumepresets.js";
import {
  PLANE_LABELS, TOOLS, VOLUME_MODES, VOLUME_TOOLS, FPS_CHOICES, SLAB_MODES, MAX_ELEVATION, MAX_SLAB_MM, planeLabel, presetLabel, slabShown, takesSlab,
  FORMATS, QUALITY, chosenEncoding,
} from "./viewoptions.js";

const PHONE = "(max-width: 640px)";   // the phone layout of app.css: one viewport, tools folded
/** The keys a held key repeats (viewer.js bindKeys): slices, 3D turns and zoom. */
const REPEATING_KEYS = ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "PageUp", "PageDown", "+", "=", "-"];
/** The reading is written into the address at most this often (writeReading). */
const READING_WRITE_MS = 300;
/** The most viewports a layout has: each but the active one has a group `vN` (writeReading). */
const MAX_VIEWPORTS = Math.max(...Object.keys(LAYOUTS).map(viewportCount));
/** The parameters of the address the reading is kept in (writeReading); the others stay as they came. */
const READING_PARAMS = ["layout", "viewport", "series", "stack", "plane", "slice", "time", "window", "mode", "preset", "azimuth", "elevation",
  "invert", "zoom", "center", "offset", "slab", "turn", "link", "format", "quality", ...Array.from({ length: MAX_VIEWPORTS }, (_, n) => `v${n + 1}`)];
/** The fields of a group (keptGroup): the letter of each parameter of a view (viewParams). */
const GROUP_FIELDS = {
  s: "slice", t: "time", w: "window", i: "invert", z: "zoom", c: "center", m: "mode", a: "azimuth", e: "elevation", o: "offset", b: "slab",
  r: "turn", p: "preset",
};
/** The letter of each parameter in a group. @type {Record<string, string>} */
const GROUP_LETTERS = Object.fromEntries(Object.entries(GROUP_FIELDS).map(([letter, name]) => [name, letter]));

/**
 * The view of a viewport other than the active one, from its group `vN=` (N its place, from 1;
 * writeReading): its view (`plane`), then `_` and a letter and a value for each other parameter
 * (GROUP_FIELDS), the DVR preset last (its names hold `_`): `coronal_s12_w40,400`. Only the form
 * is read here, into the parameters the active viewport's view has in the address, so that every
 * value is read by the same rules (openReading, applyView, restoreLinks). @param {string | null} value
 * @returns {URLSearchParams}
 */
function keptGroup(value) {
  const view = new URLSearchParams();
  if (!value) return view;
  const [plane, ...fields] = value.split("_");
  view.set("plane", plane);
  for (const [n, field] of fields.entries()) {
    const letter = field.charAt(0);
    const name = Object.hasOwn(GROUP_FIELDS, letter) ? GROUP_FIELDS[letter] : null;
    if (!name || view.has(name)) continue;
    if (name === "preset") { view.set(name, [field.slice(1), ...fields.slice(n + 1)].join("_")); break; }
    view.set(name, field.slice(1));
  }
  return view;
}

/** Whether `value` names a layout of LAYOUTS: its own keys only, so an edited link's
 *  `layout=constructor` or `__proto__` names none (LAYOUTS[value] is then Object's). @param {string | null} value */
function knownLayout(value) {
  return value != null && Object.hasOwn(LAYOUTS, value);
}

/** The view `plane=` names: one the viewer offers (PLANE_LABELS), else null. @param {string | null} value */
function knownPlane(value) {
  return PLANE_LABELS.some(([offered]) => offered === value) ? String(value) : null;
}

/**
 * What each viewport shows, from `series=` (writeReading): the key (OpenRecord.key) of the series
 * of the first `count` viewports, "" for the record the address opens. Only the form is read here;
 * a key is shown only if it is one of the patient's series the panel lists (restoreSeries).
 * @param {string | null} value @param {number} count @returns {string[]}
 */
function keptSeries(value, count) {
  return String(value || "").split(",").slice(0, count).map((key) => (/^[0-9a-f-]+\/[0-9a-f]+$/.test(key) ? key : ""));
}

/** A node that is down (unreachable, or its proxy answers 502/503/504): try the next one. */
function nodeDown(err) {
  return [0, 502, 503, 504].includes(err.status);
}

/** The record's metadata from the first of its serving nodes that answers (several nodes of an
 *  institution may share one object store; the registry lists them). */
async function openOnServingNode(ctx, nodes, recordId) {
  const recordPath = apiPath`api/v1/records/${recordId}`;
  let lastError = null;
  for (const node of nodes) {
    try {
      return { node, meta: await ctx.session.fetchJson(node.url, recordPath, { shape: recordShape(recordId) }) };
    } catch (err) {
      if (!nodeDown(err)) throw err;
      lastError = err;
    }
  }
  throw lastError;
}

export async function viewerView(ctx, institutionId, nodeId, recordId, query) {
  let nodes;
  try {
    nodes = await ctx.dir.servingNodes(institutionId, nodeId);
  } catch (err) {
    if (err.status === 403) {
      throw new ApiError(403, "forbidden", "This record is stored at another institution whose render nodes you may not list, so it cannot be opened here.");
    }
    throw err;
  }
  const { node, meta } = await openOnServingNode(ctx, nodes, recordId);
  const volumePresets = new VolumePresets(ctx);
  const [every, identity, ownPresets] = await Promise.all([
    // every named window (fillWindowChoices offers each viewport's record its modality's) ...
    ctx.session.fetchJson(node.url, "api/v1/presets", { shape: PRESETS }).catch(() => ({ window: {} })),
    patientIdentity(ctx, institutionId, nodeId, recordId, meta, query),
    // ... and the DVR presets of this record's modality (each record shown later asks for its own)
    volumePresets.of({ node, meta }),
  ]);
  if (ctx.signal.aborted) return null;   // the user left while the node answered: nothing to load or draw
  const record = new OpenRecord(ctx, node, meta, identity, institutionId);
  record.volumePresets = ownPresets;
  const viewer = new Viewer(ctx, record, { window: every.window || {} }, volumePresets, query);
  viewer.mount();
  viewer.startRecord(viewer.record);
  return () => viewer.destroy();
}

class Viewer {
  /**
   * @param {any} ctx @param {OpenRecord} record the record it opens with
   * @param {{window: Record<string, any>}} presets the node's named windows
   * @param {VolumePresets} volumePresets each modality's DVR presets, asked once
   * @param {URLSearchParams} query
   */
  constructor(ctx, record, presets, volumePresets, query) {
    this.ctx = ctx;
    this.record = record;          // the record the viewer was opened with (series.js)
    this.identity = record.identity;   // the SIVR patient and the images' patient (identity.js)
    this.node = record.node;
    this.recordPath = record.path;
    this.meta = record.meta;
    /** @type {Map<string, OpenRecord>} every record open in a viewport, by OpenRecord.key */
    this.records = new Map([[OpenRecord.key(record.node.id, record.meta.id), record]]);
    record.subscribe((r, status, framesChanged) => this.applyStatus(r, status, framesChanged));
    this.presets = presets;
    this.volumePresets = volumePresets;
    this.query = query;
    this.cache = new ImageCache();   // shared by the viewports: an image fetched once is shown anywhere
    /** @type {Map<string, NodeRetry>} one per render node, by URL: one probe at a time per node */
    this.nodeRetries = new Map();
    // the viewer's own settings, the same for every viewport
    this.settings = {
      ...chosenEncoding(query.get("format"), query.get("quality")),   // the toolbar's, kept in the address (writeReading)
      tool: matchMedia("(pointer: coarse)").matches ? "browse" : "window",
      fps: 10,
      sync: false,            // synchronised scrolling of parallel views (key L)
      referenceLines: true,   // where the active viewport's slice cuts the others (key X)
    };
    this.syncing = false;
    this.offsets = new FrameOffsets();   // aligned frames of reference (key A)
    /** @type {Viewport[]} */
    this.viewports = [];
    /** @type {Viewport | null} */
    this.active = null;
    this.layout = "1x1";
    this.phoneQuery = matchMedia(PHONE);
    this.phone = this.phoneQuery.matches;
    this.timers = new Timers();
    this.timePlaying = false;   // cine over the chosen stack's time points
    this.destroyed = false;
    this.routePath = location.hash.split("?")[0];   // the address the reading is written to (writeReading)
    this.readingDue = false;
    this.restoring = false;   // series of the address still to be shown (restoreSeries): the address waits
  }

  // ---------- page ----------

  mount() {
    const m = this.meta;
    const s = this.settings;
    this.panel = new SeriesPanel(this.ctx, this, this.query.get("patient") || (this.identity.patient && this.identity.patient.id));
    this.planeSelect = select("plane", PLANE_LABELS, "native");
    this.planeSelect.id = "plane";
    this.planeSelect.addEventListener("change", () => this.setPlane(this.planeSelect.value));

    this.layoutSelect = select("layout", Object.entries(LAYOUTS).map(([k, l]) => [k, `${l.label} (${l.key})`]), this.layout);
    this.layoutSelect.id = "layout";
    this.layoutSelect.addEventListener("change", () => this.setLayout(this.layoutSelect.value));

    this.toolButtons = TOOLS.map(([tool, label, key]) => h("button", {
      type: "button", class: "btn btn-tool", "aria-pressed": String(tool === s.tool), dataset: { tool },
      title: `${label} (${key})`, text: label, onclick: () => this.setTool(tool),
    }));

    this.windowSelect = h("select", { id: "window-preset", name: "window" });
    this.fillWindowChoices();
    this.windowSelect.addEventListener("change", () => this.active.chooseWindow(this.windowSelect.value));

    this.formatSelect = select("format", FORMATS, s.format);
    this.formatSelect.id = "format";
    this.qualityInput = h("input", { type: "range", id: "quality", min: QUALITY.min, max: QUALITY.max, step: QUALITY.step, value: s.quality });
    this.qualityOut = h("output", { for: "quality", text: String(s.quality) });
    this.formatSelect.addEventListener("change", () => { s.format = this.formatSelect.value; this.syncControls(); this.requestAll(); });
    this.qualityInput.addEventListener("change", () => { s.quality = Number(this.qualityInput.value); this.requestAll(); });
    this.qualityInput.addEventListener("input", () => { this.qualityOut.textContent = this.qualityInput.value; });

    this.playButton = h("button", { type: "button", class: "btn", id: "play", "aria-pressed": "false", text: "▶ Play", onclick: () => this.active.togglePlay() });
    this.fpsSelect = select("fps", FPS_CHOICES.map((f) => [f, `${f} fps`]), s.fps);
    this.fpsSelect.id = "fps";
    this.fpsSelect.addEventListener("change", () => { s.fps = Number(this.fpsSelect.value); });

    this.stackSelect = select("stack", [], "");   // the active viewport's record's stacks (syncStacks)
    this.stackSelect.id = "stack-select";
    this.stackSelect.addEventListener("change", () => this.chooseStack(this.stackSelect.value));
    this.timeInput = h("input", { type: "range", id: "time", min: 0, max: 0, value: 0, "aria-label": "Time point" });
    this.timeOut = h("output", { for: "time", id: "time-out" });
    this.timeInput.addEventListener("input", () => this.showTime(Number(this.timeInput.value)));
    this.timePlay = h("button", { type: "button", class: "btn", id: "time-play", "aria-pressed": "false", text: "▶ Time", onclick: () => this.toggleTimePlay() });

    this.modeSelect = select("mode", VOLUME_MODES, "mip");
    this.modeSelect.id = "volume-mode";
    this.modeSelect.addEventListener("change", () => this.active.setVolumeMode(this.modeSelect.value));
    this.volPresetSelect = select("volume-preset", [], "");   // the active viewport's record's (syncVolumePresets)
    this.volPresetSelect.id = "volume-preset";
    this.volPresetSelect.addEventListener("change", () => { this.active.state.vol.preset = this.volPresetSelect.value; this.active.requestView(); });

    this.slabInput = h("input", { type: "number", id: "slab", min: 0, max: MAX_SLAB_MM, step: 1, value: 0, inputmode: "numeric" });
    this.slabModeSelect = select("slab-mode", SLAB_MODES, "avg");
    this.slabModeSelect.id = "slab-mode";
    this.slabInput.addEventListener("change", () => {
      const vp = this.active;
      vp.state.slab.mm = slabWidth(this.slabInput.value);
      vp.changed();
      vp.requestView();
    });
    this.slabModeSelect.addEventListener("change", () => {
      this.active.state.slab.mode = this.slabModeSelect.value;
      this.active.changed();
      this.active.requestView();
    });

    this.slider = h("input", { type: "range", id: "slice", min: 0, max: Math.max(0, m.frames - 1), value: 0, "aria-label": "Slice" });
    this.sliderOut = h("output", { for: "slice", id: "slice-out" });
    this.slider.addEventListener("input", () => this.active.setIndex(Number(this.slider.value)));

    this.progress = h("progress", { id: "load-progress", max: Math.max(1, m.frames), value: 0, "aria-label": "Slices loaded" });
    this.progressText = h("span", { id: "load-text", class: "muted", text: "Starting to load…" });
    this.loadErrors = h("ul", { class: "problems", id: "load-errors", hidden: true });
    // what the upload found (e.g. unknown pixel spacing: measurements are then in pixels)
    const warnings = Array.isArray(m.warnings) ? m.warnings : [];
    this.recordWarnings = h("ul", { class: "problems", id: "record-warnings", hidden: !warnings.length },
      ...warnings.map((text) => h("li", { text })));

    const label = (text, control) => h("label", { class: "tb-field" }, h("span", { text }), control);
    this.volumeGroup = h("div", { class: "tb-group", hidden: true, "aria-label": "3D settings", role: "group" },
      label("Mode", this.modeSelect), this.volPresetLabel = label("Preset", this.volPresetSelect));
    this.cineGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Cine playback" }, this.playButton, label("Rate", this.fpsSelect));
    this.slabGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Slab (thick reformat)", hidden: true },
      label("Slab mm", this.slabInput), this.slabModeLabel = label("Slab mode", this.slabModeSelect));
    // one viewport on a phone, as its layout expects: no chooser there
    this.layoutGroup = h("div", { class: "tb-group layout-group", role: "group", "aria-label": "Layout", hidden: this.phone },
      label("Layout", this.layoutSelect));

    // On a phone the toolbar folds into one "Tools" button under the image and slider (CSS shows
    // the button on narrow screens only; on a desktop every group is always shown).
    this.toolsToggle = h("button", {
      type: "button", class: "btn tools-toggle", id: "tools-toggle", "aria-expanded": "false", "aria-controls": "viewer-tools",
      text: "☰ Tools", onclick: () => this.toggleTools(),
    });
    this.keyImages = new KeyImages(this);
    this.tagBrowser = new TagBrowser(this);
    this.toolbar = h("div", { class: "toolbar", id: "viewer-tools", role: "toolbar", "aria-label": "Viewer tools" },
      this.toolsToggle,
      this.layoutGroup,
      h("div", { class: "tb-group", role: "group", "aria-label": "View choice" }, label("View", this.planeSelect)),
      // several stacks (magnitude/phase, b-values, orientations): reformats and 3D show the chosen one
      this.stackGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Stack", hidden: true },
        label("Stack", this.stackSelect)),
      this.timeGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Time points", hidden: true },
        label("Time", h("span", { class: "range" }, this.timeInput, this.timeOut)), this.timePlay),
      this.toolGroup = h("div", { class: "tb-group tools", role: "group", "aria-label": "Mouse and touch tool" }, this.toolButtons),
      this.windowGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Window and level" }, label("Window", this.windowSelect)),
      (this.imageTools = imageToolGroup(() => this.active)).group,
      this.reportGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Key images, export, tags" }, this.keyImages.button,
        h("button", { type: "button", class: "btn", id: "export-png", text: "⤓ PNG", title: "Download the view as a PNG file (S)", onclick: () => this.exportActive() }),
        this.tagBrowser.button),
      this.cineGroup,
      this.slabGroup,
      this.volumeGroup,
      h("div", { class: "tb-group", role: "group", "aria-label": "Image encoding" },
        label("Format", this.formatSelect), this.qualityLabel = label("Quality", h("span", { class: "range" }, this.qualityInput, this.qualityOut))),
      h("div", { class: "tb-group", role: "group", "aria-label": "Reset and clear" },
        h("button", { type: "button", class: "btn", id: "reset", text: "Reset view", onclick: () => this.active.resetView() }),
        h("button", { type: "button", class: "btn", id: "clear-measures", text: "Clear measurements", onclick: () => this.active.clearMeasures() })));

    this.syncButton = h("button", {
      type: "button", class: "btn", id: "sync-scroll", "aria-pressed": String(s.sync), text: "Link scroll",
      title: "Scrolling one view moves the views of the same plane to the same position (L)", onclick: () => this.toggleSync(),
    });
    this.referenceButton = h("button", {
      type: "button", class: "btn", id: "reference-lines", "aria-pressed": String(s.referenceLines), text: "Reference lines",
      title: "Show where the active view's slice cuts the other views (X)", onclick: () => this.toggleReferenceLines(),
    });
    this.linkGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Linked views", hidden: this.phone },
      this.syncButton, this.referenceButton,
      h("button", { type: "button", class: "btn", id: "compare-prior", text: "Compare with prior",
        title: "Open the most recent earlier study's matching series beside this one (C)", onclick: () => compareWithPrior(this) }),
      h("button", { type: "button", class: "btn", id: "align", text: "Align",
        title: "Take the slices on screen as the same place across studies and keep that offset while scrolling (A)", onclick: () => alignViews(this) }),
      h("button", { type: "button", class: "btn", id: "clear-align", text: "Clear offset",
        title: "Forget the offsets between studies (Shift+A)", onclick: () => clearAlignment(this) }));
    this.toolbar.insertBefore(this.linkGroup, this.layoutGroup.nextSibling);

    this.grid = h("div", { class: "viewport-grid", id: "viewports" });
    this.title = h("h1", { id: "viewer-title" });
    this.facts = h("span", { class: "muted", id: "viewer-facts" });
    this.describeRecord(m, this.node);
    mount(this.ctx.main, h("section", { class: "viewer-page" },
      h("div", { class: "viewer-head" },
        h("button", { type: "button", class: "btn btn-quiet", text: "← Back", onclick: () => { this.writeReading(); return history.length > 1 ? history.back() : this.ctx.navigate("#/patients"); } }),
        this.title, this.facts, this.panel.toggle),
      identityPanel(this.identity),
      this.toolbar,
      h("div", { class: "viewer-body" }, this.panel.element, this.grid),
      this.sliceRow = h("div", { class: "slice-row" }, h("label", { for: "slice", text: "Slice" }), this.slider, this.sliderOut),
      h("div", { class: "load-row" }, this.progress, this.progressText),
      this.loadErrors, this.recordWarnings, this.keyImages.panel, this.tagBrowser.panel));

    this.openReading();
    this.bindKeys();
    // the reading is kept in the address when the page goes (a reload, a tab the phone discards)
    this.onPageHide = () => this.writeReading();
    window.addEventListener("pagehide", this.onPageHide);
    document.addEventListener("visibilitychange", this.onPageHide);
    this.bindTraversals();
    this.onScreenSize = () => this.fitScreen(this.phoneQuery.matches);
    this.phoneQuery.addEventListener("change", this.onScreenSize);
    this.panel.bindDrop(this.grid);
    this.panel.load();
    this.keyImages.load();
    this.active.root.focus({ preventScroll: true });
  }

  /**
   * The window became a phone's width or stopped being one (a window narrowed, a tablet turned,
   * split screen) while a record is read: the viewer becomes what it would have opened as. On a
   * phone the viewport being read stays, alone (four viewports of 190 px, with no layout chooser to
   * leave them, were unreadable), and the series drawer, which would cover it, closes; on a wider
   * screen the layout chooser and the linked views come back. @param {boolean} phone
   */
  fitScreen(phone) {
    if (phone === this.phone) return;
    this.phone = phone;
    this.layoutGroup.hidden = phone;
    this.linkGroup.hidden = phone;
    this.panel.fitScreen(phone);
    if (!phone) return;
    const reading = this.active;
    if (reading && this.viewports[0] !== reading) {
      this.viewports = [reading, ...this.viewports.filter((vp) => vp !== reading)];
      this.viewports.forEach((vp, slot) => vp.setSlot(slot));
    }
    this.setLayout("1x1");
  }

  /**
   * Open the layout and viewports of the hanging protocol, or of the reading kept in the address
   * (writeReading): `layout` (not on a phone), `viewport` (the active one, from 1), `series` (what
   * each viewport shows: restoreSeries), then the active viewport's view (applyView).
   * A value that is no such thing is ignored: the protocol's is used.
   */
  openReading() {
    const q = this.query;
    const protocol = hangingProtocol(this.meta.modality, this.phone);
    const layout = !this.phone && knownLayout(q.get("layout")) ? String(q.get("layout")) : protocol.layout;
    const count = viewportCount(layout);
    const asked = Number(q.get("viewport"));
    const slot = Number.isInteger(asked) && asked >= 1 && asked <= count ? asked - 1 : 0;
    const series = keptSeries(q.get("series"), count);
    // each viewport's view: the active one's in the address's own parameters, the others' in
    // their groups (keptGroup); none on a phone, which shows the active one alone
    const views = Array.from({ length: count }, (_, n) => (n === slot ? q : keptGroup(this.phone ? null : q.get(`v${n + 1}`))));
    const planes = [...protocol.planes];
    // the view: one the viewer offers, else the stored slices where a slice is named
    for (const [n, view] of views.entries()) {
      const plane = knownPlane(view.get("plane"));
      if (plane || view.has("slice")) planes[n] = plane || "native";
    }
    this.setLayout(layout, planes, views.map((view) => Number(view.get("slice")) || 0));
    this.activate(this.viewports[slot]);
    // each viewport's view is applied to the series it shows: the record the address opens, or the
    // one `series` names once it is shown (else, a key ignored, to the record opened); the active
    // one's first, as its stack moves every view of its record (chooseStack)
    for (const n of [slot, ...[...views.keys()].filter((other) => other !== slot)]) {
      if (!series[n] && (n === slot || views[n].has("plane"))) this.applyView(this.viewports[n], views[n]);
    }
    if (series.some(Boolean)) this.restoreSeries(series, views);
    else this.restoreLinks(views);
  }

  /**
   * The viewport `vp` (on the view of `plane=` already) takes the rest of its reading from `q`, the
   * address (the active one) or its group there (keptGroup): `stack` (its record's stack chosen,
   * the active one only), `slice` (its slice of that view; clamped as
   * Viewport's `index` and `setIndex` clamp it), `time` (a reformat's or 3D view's time point),
   * `window` (its window, customWindow; a preset's comes back as the preset), `invert=1`, `zoom`
   * and a 2D view's `center` (`x,y`, fractions of the image; bounded as a drag's: Viewport zoomTo,
   * panTo), a reformat's `slab` (keptSlab), a 2D view's rotate and flip `turn` (keptPictureTurn),
   * and on a 3D view `mode` (VOLUME_MODES), `preset` (a DVR preset of its record's modality)
   * and `azimuth` and `elevation` (keptTurn). @param {Viewport} vp @param {URLSearchParams} q
   */
  applyView(vp, q) {
    const record = vp.record;
    const plane = vp.state.plane;
    // the stack first: choosing it moves the views to its own middle (chooseStack)
    const stack = vp === this.active ? record.stacks.find((st) => st.id === q.get("stack") && st !== record.stack) : undefined;
    if (stack) this.chooseStack(stack.id);
    const slice = Number(q.get("slice"));
    const atStart = record === this.record && plane === "native" && !stack;   // setLayout opened it there
    if (!atStart && plane !== "3d" && q.has("slice") && Number.isFinite(slice)) vp.setIndex(slice);
    const time = Number(q.get("time"));
    const phases = record.stack ? record.stack.phases.length : 1;
    if (plane !== "native" && Number.isInteger(time) && time > 0 && time < phases) vp.setTime(time);
    const kept = customWindow(q.get("window"));
    if (kept) vp.restoreWindow(kept);
    if (q.get("invert") === "1" && !vp.state.invert) vp.toggleInvert();
    // zoom and pan by the rules a drag and the keys zoom and pan by (Viewport zoomTo, panTo)
    const zoom = keptNumber(q.get("zoom"));
    if (zoom != null) vp.zoomTo(zoom);
    const center = String(q.get("center") || "").split(",").map(keptNumber);
    if (plane !== "3d" && center.length === 2 && center[0] != null && center[1] != null) vp.panTo(center[0], center[1]);
    const slab = keptSlab(q.get("slab"));
    if (slab && takesSlab(plane)) {
      vp.state.slab = slab;
      vp.requestView();
    }
    const picture = keptPictureTurn(q.get("turn"));
    if (picture && plane !== "3d") vp.setTurn(picture);
    if (plane !== "3d") {
      if (zoom != null) vp.requestView();
      return;
    }
    const mode = VOLUME_MODES.find(([offered]) => offered === q.get("mode"));
    if (mode && mode[0] !== vp.state.vol.mode) vp.setVolumeMode(mode[0]);
    const preset = q.get("preset");
    if (preset && record.volumePresets.volume.includes(preset)) vp.state.vol.preset = preset;
    const turn = keptTurn(q.get("azimuth"), q.get("elevation"));
    if (turn.azimuth != null) vp.state.vol.azimuth = turn.azimuth;
    if (turn.elevation != null) vp.state.vol.elevation = turn.elevation;
    vp.changed();
    vp.requestView();
  }

  /**
   * Show the series the address names in their viewports (`series`, keptSeries), each only if it
   * is still one of the patient's series the panel lists (an edited key names none: ignored, no
   * request made for it), each on its kept view `views` (applyView; if its key is ignored, its
   * view is the record opened's), then their links (restoreLinks). A viewport the reader gave
   * another series meanwhile keeps it. Until this is done the address is left as it came
   * (writeReading), so a reload meanwhile loses nothing.
   * @param {string[]} series @param {URLSearchParams[]} views
   */
  async restoreSeries(series, views) {
    this.restoring = true;
    const viewed = new Set();
    try {
      const entries = await this.panel.ready;
      for (const [slot, key] of series.entries()) {
        const entry = key ? entries.find((e) => e.key === key || OpenRecord.key(e.node.id, e.meta.id) === key) : null;
        if (!entry || this.destroyed) continue;
        let record;
        try {
          record = await this.panel.open(entry);
          record.volumePresets = await this.volumePresets.of(record);   // a kept DVR preset is checked against them
        } catch (err) {
          if (!err.isAuthFailure && !this.destroyed) this.ctx.showAlert(`The series cannot be shown: ${this.ctx.describeError(err)}`);
          continue;
        }
        const vp = this.viewports[slot];
        if (this.destroyed || !vp || vp.record !== this.record) continue;
        // on its kept view; with none kept (an address written before views were), its stored slices
        this.showRecord(vp, record, views[slot] === this.query || views[slot].has("plane") ? vp.state.plane : "native");
        this.applyView(vp, views[slot]);
        viewed.add(slot);
      }
      for (const [slot, vp] of this.viewports.entries()) {
        if (series[slot] && !viewed.has(slot) && vp.record === this.record && views[slot] && !this.destroyed) this.applyView(vp, views[slot]);
      }
    } finally {
      this.restoring = false;
      if (!this.destroyed) this.restoreLinks(views);
      this.keepReading();
    }
  }

  /**
   * The links kept in the address (writeReading), once every viewport shows its series: the offset
   * of each viewport's frame of reference (`offset` of the active one, `o` of a group: keptOffset)
   * and linked scrolling (`link=1`), turned on without moving any view (each is where it was).
   * @param {URLSearchParams[]} views
   */
  restoreLinks(views) {
    for (const [slot, vp] of this.viewports.entries()) {
      const mm = views[slot] ? keptOffset(views[slot].get("offset")) : null;
      if (mm != null) this.offsets.keep(frameOf(vp.meta), mm);
    }
    if (this.query.get("link") === "1" && !this.settings.sync) this.setSync(true, false, false);
    this.refreshCorners();
    this.drawReferenceLines();
  }

  /** The reading changed: it is written into the address within READING_WRITE_MS (writeReading). */
  keepReading() {
    if (this.readingDue || this.destroyed) return;
    this.readingDue = true;
    this.timers.later("reading", READING_WRITE_MS, () => this.writeReading());
  }

  /**
   * Keep the reading in the address (replaceState: scrolling fills no history), so that a reload,
   * or back and forward, opens it again (openReading): the layout, the active viewport, the stack,
   * the series each viewport shows (a prior, another series of the patient: its key), the active
   * one's view, slice and time point, its chosen window (a custom one, a preset or the file's: the
   * same image after a reload), its zoom and pan and its 3D projection, DVR preset and turn, and
   * the toolbar's image format and quality (read back by chosenEncoding). Only ids and view
   * settings: never a patient's data. @returns {boolean} whether the address was written
   */
  writeReading() {
    this.readingDue = false;
    this.timers.clear("reading");
    const vp = this.active;
    if (this.destroyed || this.restoring || this.ctx.signal.aborted || !vp || location.hash.split("?")[0] !== this.routePath) return false;
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    for (const name of READING_PARAMS) params.delete(name);
    if (!this.phone) params.set("layout", this.layout);
    const slot = this.viewports.indexOf(vp);
    if (slot > 0) params.set("viewport", String(slot + 1));
    const series = this.viewports.map((each) => (each.record === this.record ? "" : OpenRecord.key(each.record.node.id, each.record.meta.id)));
    if (series.some(Boolean)) params.set("series", series.join(","));
    const stack = vp.record.stack;
    if (stack && vp.record.stacks.length > 1) params.set("stack", stack.id);
    for (const [name, value] of this.viewParams(vp)) if (name !== "plane" || value !== "native") params.set(name, value);
    if (!this.phone) {
      for (const [n, other] of this.viewports.entries()) {
        if (other === vp) continue;
        const fields = this.viewParams(other).map(([name, value]) => (name === "plane" ? value : `${GROUP_LETTERS[name]}${value}`));
        params.set(`v${n + 1}`, fields.join("_"));   // read back by keptGroup
      }
    }
    if (this.settings.sync) params.set("link", "1");
    // the toolbar's format and quality (chosenEncoding), where they are not the viewer's own
    if (this.settings.format !== FORMATS[0][0]) params.set("format", this.settings.format);
    if (this.settings.quality !== QUALITY.start) params.set("quality", String(this.settings.quality));
    const address = `${this.routePath}?${params}`;
    if (location.hash === address) return false;
    history.replaceState(history.state, "", address);
    return true;
  }

  /**
   * The view of `vp` as the address keeps it (writeReading, read back by applyView): its view, its
   * slice of it (none for 3D), the time point of a reformat or 3D view, its chosen window (not on
   * 3D), whether it is inverted, its zoom and a zoomed 2D view's centre, on 3D its projection, turn and DVR preset (last: a group ends with it, keptGroup), and the
   * offset of its frame of reference where it was aligned. @param {Viewport} vp @returns {[string, string][]}
   */
  viewParams(vp) {
    const s = vp.state;
    /** @type {[string, string][]} */
    const view = [["plane", s.plane]];
    if (s.plane !== "3d") view.push(["slice", String(vp.index())]);
    if (vp.record.stack && s.plane !== "native" && s.time > 0) view.push(["time", String(s.time)]);
    if (s.plane !== "3d" && s.windowChoice !== "auto" && s.window) view.push(["window", windowParam(s.window)]);
    if (s.invert) view.push(["invert", "1"]);
    if (slabShown(s)) view.push(["slab", slabParam(s.slab)]);   // keptSlab
    const turned = s.turn.rotate !== 0 || s.turn.flipH || s.turn.flipV;
    if (s.plane !== "3d" && turned) view.push(["turn", turnParam(s.turn)]);   // keptPictureTurn
    // read back by applyView: the zoom where the view is zoomed, and a zoomed 2D view's centre
    const short = (/** @type {number} */ value) => String(Number(value.toFixed(6)));   // 1.953125, 2.5: exact enough for the same region
    if (vp.zoomFactor() !== 1) view.push(["zoom", short(vp.zoomFactor())]);
    if (s.plane !== "3d" && s.zoom > 1) view.push(["center", `${short(s.cx)},${short(s.cy)}`]);
    if (s.plane === "3d") {
      view.push(["mode", s.vol.mode], ["azimuth", s.vol.azimuth.toFixed(1)], ["elevation", s.vol.elevation.toFixed(1)]);   // read back by keptTurn
    }
    const offset = this.offsets.of(frameOf(vp.meta));
    if (offset !== undefined) view.push(["offset", offset.toFixed(2)]);   // read back by keptOffset
    if (s.plane === "3d" && s.vol.mode === "dvr" && s.vol.preset) view.push(["preset", s.vol.preset]);
    return view;
  }

  /**
   * The browser's own Back or Forward within READING_WRITE_MS of the last change keeps that change
   * too. Once the traversal is done the entry left cannot be written (replaceState writes the one
   * arrived at), and writing it while the traversal starts (the Navigation API's `navigate`, before
   * the address changes) cancels it in Chromium; so the reading is written and the same traversal
   * made again. Without the Navigation API the last READING_WRITE_MS may be missing, as before.
   */
  bindTraversals() {
    const navigation = /** @type {any} */ (window).navigation;
    if (!navigation) return;
    this.onNavigate = (/** @type {any} */ e) => {
      if (e.navigationType !== "traverse" || !this.readingDue) return;
      const to = e.destination.key;
      if (!this.writeReading()) return;
      setTimeout(() => { if (navigation.currentEntry && navigation.currentEntry.key !== to) navigation.traverseTo(to); }, 0);
    };
    navigation.addEventListener("navigate", this.onNavigate);
  }

  toggleTools() {
    const open = this.toolsToggle.getAttribute("aria-expanded") !== "true";
    this.toolsToggle.setAttribute("aria-expanded", String(open));
    this.toolbar.classList.toggle("open", open);
  }

  fillWindowChoices() {
    const meta = this.active ? this.active.meta : this.meta;
    const options = [["auto", "Default (each image its own)"], ...namedWindows(this.presets, meta), ["custom", "Custom (drag)"]];
    mount(this.windowSelect, options.map(([v, t]) => h("option", { value: v, text: t })));
  }

  /** The heading names the active viewport's series (several series may be on screen). */
  describeRecord(m, node) {
    this.title.textContent = [m.modality, m.description].filter(Boolean).join(" · ") || "Record";
    this.facts.textContent = `${m.columns}×${m.rows} · ${m.frames} slice${m.frames === 1 ? "" : "s"} · ${node.name}`;
  }

  // ---------- layout and the active viewport ----------

  /**
   * Show `layout` ("1x1", "1x2", "2x1", "2x2"). Viewports that stay keep everything they show;
   * new ones open on `planes` (the hanging protocol) or on the record's slices, the stored slices
   * at `slices` (a reading kept in the address), else at the first.
   * @param {string} layout @param {string[]} [planes] @param {number[]} [slices]
   */
  setLayout(layout, planes = [], slices = []) {
    if (!knownLayout(layout)) return;
    this.layout = layout;
    const count = viewportCount(layout);
    for (const vp of this.viewports.splice(count)) vp.destroy();
    while (this.viewports.length < count) {
      const slot = this.viewports.length;
      const vp = new Viewport(this, slot, planes[slot] || "native", slices[slot] || 0);
      this.viewports.push(vp);
      vp.setActive(false);
      this.grid.append(vp.root);
      vp.clearImage();
    }
    const { rows, columns } = LAYOUTS[layout];
    this.grid.dataset.layout = layout;
    this.grid.style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
    this.grid.style.gridTemplateRows = `repeat(${rows}, minmax(0, 1fr))`;
    this.layoutSelect.value = layout;
    this.activate(this.active && this.viewports.includes(this.active) ? this.active : this.viewports[0]);
    for (const vp of this.viewports) if (vp.record.load.state !== "unloaded") vp.requestView();
  }

  /** Make `vp` the viewport the toolbar and the keys act on. */
  activate(vp) {
    this.keepReading();
    if (this.active === vp) { this.syncControls(); return; }
    if (this.active) this.active.setActive(false);
    const recordChanged = !this.active || this.active.record !== vp.record;
    this.active = vp;
    vp.setActive(true);
    if (recordChanged) this.recordShown();
    this.syncControls();
    this.drawReferenceLines();
    this.refreshCorners();
  }

  /** The active viewport shows another record: the window choices and load status follow it. */
  recordShown() {
    this.describeRecord(this.active.meta, this.active.node);
    this.fillWindowChoices();
    if (this.active.record.status) this.showLoad(this.active.record.status);
  }

  /**
   * Show `record` in `vp` (the series panel, priors): it is loaded on its node once, however many
   * viewports show it.
   * @param {Viewport} vp @param {OpenRecord} record @param {string} [plane]
   */
  showRecord(vp, record, plane = "native") {
    const key = OpenRecord.key(record.node.id, record.meta.id);
    const known = this.records.get(key);
    if (known) record = known;
    else {
      this.records.set(key, record);
      record.subscribe((r, status, framesChanged) => this.applyStatus(r, status, framesChanged));
      this.askVolumePresets(record);
    }
    vp.setRecord(record, plane);
    if (vp === this.active) { this.recordShown(); this.syncControls(); }
    if (record.load.state === "unloaded" && !record.status) this.startRecord(record);
    return record;
  }

  /** Ask for the DVR presets of `record`'s modality (once per modality: VolumePresets); its
   *  viewports and, if one is active, the 3D controls take them when they come. @param {OpenRecord} record */
  async askVolumePresets(record) {
    record.volumePresets = await this.volumePresets.of(record);
    if (this.destroyed) return;
    for (const vp of this.viewports) if (vp.record === record) vp.volumePresetsKnown();
    this.syncControls();
  }

  /** The DVR preset choice offered for `record` (the active viewport's); its presets. @param {OpenRecord} record */
  syncVolumePresets(record) {
    const offered = record.volumePresets.volume;
    const key = offered.join(",");
    if (this.volPresetSelect.dataset.presets !== key) {
      this.volPresetSelect.replaceChildren(...offered.map((p) => h("option", { value: p, text: presetLabel(p) })));
      this.volPresetSelect.dataset.presets = key;
    }
    this.volPresetSelect.value = this.active.state.vol.preset;
    return offered;
  }

  /** A viewport's state changed: the toolbar follows if it is the active one. */
  changed(vp) {
    this.keepReading();
    if (vp === this.active) this.syncControls();
  }

  // ---------- linked views ----------

  /** Synchronised scrolling on or off; turning it on brings the parallel views to the active one.
   *  @param {boolean} [say] announce it (not where the caller says what it did: align, compare) */
  toggleSync(say = true) {
    this.setSync(!this.settings.sync, say);
  }

  /** Synchronised scrolling `on` or off; turned on, the parallel views go to the active one's place
   *  if `follow` (not for a reading restored from the address: each view is where it was).
   *  @param {boolean} on @param {boolean} [say] @param {boolean} [follow] */
  setSync(on, say = true, follow = true) {
    this.settings.sync = on;
    this.syncButton.setAttribute("aria-pressed", String(on));
    if (say) this.ctx.announce(on ? "Scrolling linked." : "Scrolling not linked.");
    if (on && follow && this.active) this.scrolled(this.active);
    this.refreshCorners();
  }

  toggleReferenceLines() {
    this.settings.referenceLines = !this.settings.referenceLines;
    this.referenceButton.setAttribute("aria-pressed", String(this.settings.referenceLines));
    this.drawReferenceLines();
  }

  /**
   * A viewport moved to another slice: with scrolling linked, the views of the same plane go to
   * the same patient position (other planes are left alone), and the reference lines follow.
   */
  scrolled(vp) {
    const pos = this.settings.sync && !this.syncing ? slicePosition(vp) : null;
    if (pos) {
      this.syncing = true;   // the followers' own setIndex must not lead in turn
      try {
        for (const other of this.viewports) {
          const index = other === vp ? null : followingIndex(other, pos, this.offsets);
          if (index != null && index !== other.index()) other.setIndex(index);
        }
      } finally {
        this.syncing = false;
      }
    }
    this.drawReferenceLines();
  }

  /** The reference line of the active viewport on `vp`, when they are on. */
  referenceLineOn(vp) {
    return this.settings.referenceLines ? referenceOn(this.active, vp, this.offsets) : null;
  }

  /** What `vp`'s overlay says of its link to the active viewport (offset across studies). */
  linkNote(vp) {
    return this.settings.sync ? linkNote(this.active, vp, this.offsets) : null;
  }

  /** Redraw the corners of every viewport with an image (the link notes changed). */
  refreshCorners() {
    for (const vp of this.viewports) if (vp.shownEntry) vp.overlay.updateCorners(vp, vp.shownEntry);
  }

  drawReferenceLines() {
    for (const vp of this.viewports) vp.overlay.drawMeasures(vp);
  }

  requestAll() {
    for (const vp of this.viewports) vp.requestView();
  }

  syncControls() {
    const vp = this.active;
    if (!vp || !this.slider) return;
    const s = vp.state;
    const is3d = s.plane === "3d";
    const count = vp.count();
    for (const b of this.toolButtons) b.setAttribute("aria-pressed", String(b.dataset.tool === this.settings.tool));
    this.planeSelect.value = s.plane;
    // in 3D a drag rotates; on a projection the window tool windows it instead (Viewport.dragTool)
    this.toolGroup.hidden = is3d && s.vol.mode === "dvr";
    for (const b of this.toolButtons) b.hidden = is3d && !VOLUME_TOOLS.includes(b.dataset.tool || "");
    this.cineGroup.hidden = is3d || count < 2;
    this.playButton.textContent = s.playing ? "❚❚ Pause" : "▶ Play";
    this.playButton.setAttribute("aria-pressed", String(s.playing));
    this.volumeGroup.hidden = !is3d;
    this.modeSelect.value = s.vol.mode;
    this.slabGroup.hidden = !takesSlab(s.plane);   // slabs are reformats of the volume
    this.slabInput.value = String(s.slab.mm);
    this.slabModeSelect.value = s.slab.mode;
    this.slabModeLabel.hidden = s.slab.mm === 0;
    this.windowGroup.hidden = is3d && s.vol.mode === "dvr";   // DVR colours come from its preset
    this.volPresetLabel.hidden = s.vol.mode !== "dvr" || !this.syncVolumePresets(vp.record).length;
    this.qualityLabel.hidden = this.settings.format === "png";
    this.sliceRow.hidden = is3d || count < 2;
    this.slider.max = String(Math.max(0, count - 1));
    this.slider.value = String(vp.index());
    this.sliderOut.textContent = vp.sliceCounter();
    const stack = this.syncStacks(vp.record);
    const phases = stack ? stack.phases.length : 1;
    const time = vp.timePoint();
    this.timeGroup.hidden = phases < 2 || time < 0;
    this.timeInput.max = String(Math.max(0, phases - 1));
    this.timeInput.value = String(Math.max(0, time));
    this.timeOut.textContent = `${Math.max(0, time) + 1} / ${phases}`;
    this.timePlay.textContent = this.timePlaying ? "❚❚ Time" : "▶ Time";
    this.timePlay.setAttribute("aria-pressed", String(Boolean(this.timePlaying)));
    this.windowSelect.value = s.windowChoice;
    const ready = vp.record.load.state === "ready";
    for (const opt of this.planeSelect.options) {
      // a reformat the node publishes no geometry for (a node older than `planes`) is not offered
      if (opt.value !== "native") opt.disabled = !ready || (opt.value !== "3d" && !planeInfo(vp.meta, opt.value).count);
    }
    this.imageTools.sync(vp);
    this.keyImages.sync(vp);
    this.tagBrowser.sync(vp);
    for (const each of this.viewports) each.syncDataset();
  }

  // ---------- stacks and time points (stacks.js) ----------

  /** The stack choice offered for `record` (the active viewport's); its chosen stack. */
  syncStacks(record) {
    const key = `${record.node.id}/${record.meta.id}`;
    if (this.stackSelect.dataset.record !== key) {
      this.stackSelect.replaceChildren(...record.stacks.map((st) => h("option", {
        value: st.id, text: st.volume ? st.label : `${st.label} (no volume)` })));
      this.stackSelect.dataset.record = key;
    }
    this.stackGroup.hidden = record.stacks.length < 2;
    this.stackSelect.value = record.stack ? record.stack.id : "";
    return record.stack;
  }

  /** Show stack `id` of the active viewport's record in reformats and 3D views (in every viewport
   *  showing that record); the stored-slices views go to its middle frame. */
  chooseStack(id) {
    const record = this.active.record;
    const stack = record.stacks.find((st) => st.id === id);
    if (!stack || stack === record.stack) return;
    this.stopTimePlay();
    record.stack = stack;
    record.meta.planes = planesFor(record.planes, stack);
    for (const vp of this.viewports.filter((each) => each.record === record)) {
      vp.state.time = 0;
      for (const plane of Object.keys(vp.state.index)) if (plane !== "native") delete vp.state.index[plane];
      if (vp.state.plane === "native") vp.state.index.native = middleFrame(stack);
      vp.clearImage();
      vp.changed();
      vp.requestView();
    }
    this.drawReferenceLines();
    this.ctx.announce(`Stack ${stack.label}.`);
  }

  /** The active viewport at time point `time`: its stored slice at the same position, or its
   *  reformat or 3D view of that time point. */
  showTime(time) {
    this.active.setTime(time);
  }

  toggleTimePlay() {
    if (this.timePlaying) { this.stopTimePlay(); return; }
    this.timePlaying = true;
    const tick = () => {
      if (!this.timePlaying || this.destroyed) return;
      const stack = this.active.record.stack;
      const phases = stack ? stack.phases.length : 1;
      this.showTime((Math.max(0, this.active.timePoint()) + 1) % phases);
      this.timers.later("time-cine", 1000 / this.settings.fps, tick);
    };
    tick();
    this.syncControls();
  }

  stopTimePlay() {
    this.timePlaying = false;
    this.timers.clear("time-cine");
    if (this.timePlay) this.syncControls();
  }

  setPlane(plane) {
    this.active.setPlane(plane);
    this.drawReferenceLines();
    this.ctx.announce(plane === "3d" ? "3D view. Drag to rotate." : `${planeLabel(plane)} view.`);
  }

  /** Download the active viewport's view as a PNG (export.js). */
  async exportActive() {
    try {
      const done = await exportView(this.active);
      this.ctx.announce(done ? `Saved ${done.name} (${done.width}×${done.height}).` : "No image to export yet.");
    } catch (err) {
      if (!err.isAuthFailure) this.ctx.announce(`The export failed: ${this.ctx.describeError(err)}`);
    }
  }

  setTool(tool) {
    this.settings.tool = tool;
    this.syncControls();
  }

  // ---------- loading ----------

  /** The retries of `node` (noderetry.js), shared by every viewport showing one of its records.
   *  @param {{url: string}} node */
  nodeRetry(node) {
    let retry = this.nodeRetries.get(node.url);
    if (!retry) {
      retry = new NodeRetry();
      this.nodeRetries.set(node.url, retry);
    }
    return retry;
  }

  /** Load `record` on its node (again, after the node unloaded it), then show its viewports. */
  async startRecord(record) {
    await record.start();
    for (const vp of this.viewports) if (vp.record === record) vp.requestView();
  }

  /** A record's load status: its viewports ask again for slices that came; the bar shows the active one's. */
  applyStatus(record, status, framesChanged) {
    if (this.destroyed) return;
    if (this.active && record === this.active.record) this.showLoad(status);
    this.syncControls();
    for (const vp of this.viewports) if (vp.record === record) vp.loadChanged(framesChanged);
    if (status.state === "ready" && record === this.active.record) this.ctx.announce(`All ${status.frames_total} slices loaded.`);
  }

  /** The progress bar and text of a load status (the active viewport's record). */
  showLoad(status) {
    this.progress.max = Math.max(1, status.frames_total);
    this.progress.value = status.frames_ready;
    if (status.state === "failed") {
      this.progressText.textContent = `Loading failed: ${this.ctx.describeError(status.error)}`;
    } else if (status.state === "ready" && status.frames_ready < status.frames_total) {
      this.progressText.textContent = `${status.frames_ready} of ${status.frames_total} slices loaded; the others cannot be shown (below).`;
    } else if (status.state === "ready") {
      this.progressText.textContent = `All ${status.frames_total} slices loaded.`;
    } else if (status.state === "error") {
      this.progressText.textContent = `Loading stopped: ${status.frames_ready} of ${status.frames_total} slices could be read.`;
    } else {
      this.progressText.textContent = `Loading slices: ${status.frames_ready} of ${status.frames_total}`;
    }
    const errors = status.errors || [];
    mount(this.loadErrors, errors.slice(0, 20).map((e) => h("li", { text: `Slice ${e.frame + 1}: ${e.message}` })));
    this.loadErrors.hidden = !errors.length;
  }

  // ---------- keys ----------

  /**
   * Keys work wherever focus is, except in form controls, which keep their own keys. A key held
   * down repeats only where a repeat is what the hand means: stepping through slices (and the 3D
   * view's turns) and zooming. Every other key acts once per press: the keyboard's repeat of a held
   * S exported 15 PNG files in half a second, of a held T or K opened and closed its panel at random.
   */
  bindKeys() {
    this.onKey = (e) => {
      if (e.altKey || e.metaKey || e.ctrlKey || e.defaultPrevented) return;
      if (e.target.closest && e.target.closest("input, select, textarea, button, a")) return;
      const action = this.keyAction(e);
      if (!action) return;
      e.preventDefault();
      if (!e.repeat || REPEATING_KEYS.includes(e.key)) action();
    };
    document.addEventListener("keydown", this.onKey);
  }

  /** What key `e` does to the active viewport, or null for a key the viewer leaves to the page.
   *  @param {KeyboardEvent} e @returns {(() => any) | null} */
  keyAction(e) {
    const vp = this.active;
    const s = vp.state;
    const step = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -10, PageDown: 10 }[e.key];
    const tool = TOOLS.find(([, , k]) => k.toLowerCase() === e.key.toLowerCase());
    const layout = Object.entries(LAYOUTS).find(([, l]) => l.key === e.key);
    if (s.plane === "3d" && step !== undefined) {
      return () => {
        if (e.key === "ArrowLeft" || e.key === "ArrowRight") s.vol.azimuth += step * 10;
        else s.vol.elevation = clamp(s.vol.elevation + step * 10, -MAX_ELEVATION, MAX_ELEVATION);
        vp.requestView();
      };
    }
    if (step !== undefined) return () => { vp.stopPlay(); vp.setIndex(vp.index() + step); };
    if (e.key === "Home") return () => vp.setIndex(0);
    if (e.key === "End") return () => vp.setIndex(vp.count() - 1);
    if (e.key === "+" || e.key === "=") return () => vp.zoomBy(1.25);
    if (e.key === "-") return () => vp.zoomBy(0.8);
    if (e.key === "0") return () => vp.resetView();
    if (e.key === " ") return () => vp.togglePlay();
    if (layout && !this.phone) return () => this.setLayout(layout[0]);
    if (e.key.toLowerCase() === "l" && !this.phone) return () => this.toggleSync();
    if (e.key.toLowerCase() === "x" && !this.phone) return () => this.toggleReferenceLines();
    if (e.key.toLowerCase() === "c" && !this.phone) return () => compareWithPrior(this);
    if (e.key === "a" && !this.phone) return () => alignViews(this);
    if (e.key === "A" && !this.phone) return () => clearAlignment(this);
    if (e.key.toLowerCase() === "v") return () => this.activate(this.viewports[(this.viewports.indexOf(vp) + 1) % this.viewports.length]);
    const image = imageActionForKey(e);
    if (image) return () => imageAction(vp, image);
    if (e.key.toLowerCase() === "k") return () => this.keyImages.toggle(vp);
    if (e.key.toLowerCase() === "s") return () => this.exportActive();
    if (e.key.toLowerCase() === "t") return () => this.tagBrowser.toggle();
    if (tool && s.plane !== "3d") return () => this.setTool(tool[0]);
    return null;
  }

  destroy() {
    this.destroyed = true;
    this.timers.clearAll();
    for (const record of this.records.values()) record.close();
    this.panel.destroy();
    for (const vp of this.viewports) vp.destroy();
    for (const retry of this.nodeRetries.values()) retry.stop();
    if (this.onKey) document.removeEventListener("keydown", this.onKey);
    if (this.onScreenSize) this.phoneQuery.removeEventListener("change", this.onScreenSize);
    if (this.onPageHide) {
      window.removeEventListener("pagehide", this.onPageHide);
      document.removeEventListener("visibilitychange", this.onPageHide);
    }
    if (this.onNavigate) /** @type {any} */ (window).navigation.removeEventListener("navigate", this.onNavigate);
    this.cache.clear();
  }
}
