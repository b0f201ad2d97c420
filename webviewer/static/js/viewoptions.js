// What a viewport can show and the choices the toolbar offers: one definition, shared by the
// viewer shell, the viewports, their overlay and the tools.

/** @type {Array<[string, string]>} view (plane) and its label */
export const PLANE_LABELS = [["native", "Slices"], ["axial", "Axial"], ["coronal", "Coronal"], ["sagittal", "Sagittal"], ["3d", "3D"]];
/** @type {Array<[string, string, string]>} mouse/touch tool, label, key */
export const TOOLS = [["browse", "Browse", "B"], ["window", "Window", "W"], ["pan", "Pan", "P"], ["zoom", "Zoom", "Z"], ["measure", "Measure", "M"],
  ["probe", "Probe", "I"], ["rect", "Rectangle ROI", "R"], ["ellipse", "Ellipse ROI", "E"], ["angle", "Angle", "G"]];
/** The tools offered on a 3D projection: Browse (a drag rotates) and Window (a drag windows). */
export const VOLUME_TOOLS = ["browse", "window"];
/** @type {Array<[string, string]>} */
export const VOLUME_MODES = [["mip", "MIP"], ["minip", "MinIP"], ["avg", "Average"], ["dvr", "Volume (DVR)"]];
/** @type {Array<[string, string]>} */
export const SLAB_MODES = [["avg", "Average"], ["mip", "MIP"], ["minip", "MinIP"]];
export const FPS_CHOICES = [2, 5, 10, 15, 20, 25, 30];
export const MAX_SLAB_MM = 100;   // thicker than any reading slab (the node itself accepts up to 500 mm)

/** Whether a view takes a slab: a reformat of the volume (not the stored slices, not 3D). @param {string} plane */
export function takesSlab(plane) {
  return plane !== "native" && plane !== "3d";
}

/** Whether a view shows a slab: one it takes, thicker than 0 mm (the request, the corner text and the address).
 *  @param {{plane: string, slab: {mm: number}}} state */
export function slabShown(state) {
  return takesSlab(state.plane) && state.slab.mm > 0;
}
/** The image formats the toolbar offers (the node's `format` of an image), the first the viewer's own. */
export const FORMATS = [["webp", "WebP"], ["jpeg", "JPEG"], ["png", "PNG (lossless)"]];
/** The toolbar's quality slider (the node's `quality`, 1..100, of WebP and JPEG): its range, step and start. */
export const QUALITY = { min: 10, max: 100, step: 5, start: 85 };

/**
 * The format and quality the viewer asks for: those `format=` and `quality=` of the address name
 * (viewer.js `writeReading` keeps the toolbar's choice there), if the toolbar offers them (FORMATS,
 * a quality the slider can be set to), else the viewer's own, so an edited value is never sent.
 * @param {string | null} format @param {string | null} quality @returns {{format: string, quality: number}}
 */
export function chosenEncoding(format, quality) {
  const q = quality != null && /^\d{1,3}$/.test(quality) ? Number(quality) : NaN;
  const onSlider = q >= QUALITY.min && q <= QUALITY.max && (q - QUALITY.min) % QUALITY.step === 0;
  return { format: FORMATS.some(([offered]) => offered === format) ? String(format) : FORMATS[0][0], quality: onSlider ? q : QUALITY.start };
}

/** How far a 2D view zooms in (1 is the whole image). */
export const MAX_ZOOM = 16;

/**
 * The zoom factors a view of `plane` may have: a 2D view from the whole image (1) to MAX_ZOOM, a
 * 3D view (its camera) from a quarter to 8. Every zoom keeps within them (Viewport `zoomTo`): the
 * wheel, the keys, a drag, a pinch (its preview too, tools.js) and a reading kept in the address.
 * @param {string} plane @returns {[number, number]}
 */
export function zoomBounds(plane) {
  return plane === "3d" ? [0.25, 8] : [1, MAX_ZOOM];
}
/** How far a 3D view tilts up or down (degrees): a drag, the keys and a kept reading stop at the poles. */
export const MAX_ELEVATION = 90;

/** The label of a view ("Slices", "Axial", ...). @param {string} plane @returns {string} */
export function planeLabel(plane) {
  const found = PLANE_LABELS.find(([p]) => p === plane);
  return found ? found[1] : plane;
}

/** The label of a choice in one of the lists above. @param {Array<[string, string]>} choices @param {string} key */
export function labelOf(choices, key) {
  const found = choices.find(([k]) => k === key);
  return found ? found[1] : key;
}

/** "ct_temporal_bone" -> "CT temporal bone". */
export function presetLabel(name) {
  const words = name.split("_");
  const first = /^(ct|mr|pet|us)$/i.test(words[0]) ? words[0].toUpperCase() : words[0][0].toUpperCase() + words[0].slice(1);
  return [first, ...words.slice(1)].join(" ");
}

/**
 * The DVR preset a view starts with: the node's default for the record's modality
 * (GET /api/v1/presets?modality=, transfer.default_preset), so no second table lives here.
 * @param {{volume?: string[], volume_default?: string}} presets @returns {string}
 */
export function startPreset(presets) {
  const offered = presets.volume || [];
  return presets.volume_default && offered.includes(presets.volume_default) ? presets.volume_default : offered[0] || "";
}

/** DICOM DA (YYYYMMDD) as ISO, so dates read the same everywhere in the viewer. */
export function dicomDate(value) {
  const m = String(value || "").match(/^(\d{4})-?(\d{2})-?(\d{2})$/);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : value;
}
