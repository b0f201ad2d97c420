// Viewport layouts and the hanging protocol: which grid the viewer opens with and what each
// viewport shows. One definition, used by the viewer shell (and documented in docs/viewer.md).

/**
 * @typedef {{rows: number, columns: number, label: string, key: string}} Layout
 * "RxC": R rows by C columns ("1x2" is two viewports side by side, "2x1" one above the other).
 * @type {Record<string, Layout>}
 */
export const LAYOUTS = {
  "1x1": { rows: 1, columns: 1, label: "1×1", key: "1" },
  "1x2": { rows: 1, columns: 2, label: "1×2 (side by side)", key: "2" },
  "2x1": { rows: 2, columns: 1, label: "2×1 (one above the other)", key: "3" },
  "2x2": { rows: 2, columns: 2, label: "2×2", key: "4" },
};

/**
 * The layout and views a record opens with, by modality. A CT opens 2×2: its acquired slices
 * (the original images, shown at once and numbered as the scanner numbered them; axial for an
 * axial CT), coronal and sagittal reformats, and 3D. Everything else opens 1×1 on its slices.
 * @type {Record<string, {layout: string, planes: string[]}>}
 */
export const HANGING_PROTOCOLS = {
  CT: { layout: "2x2", planes: ["native", "coronal", "sagittal", "3d"] },
};
const DEFAULT_PROTOCOL = { layout: "1x1", planes: ["native"] };

/**
 * The protocol for a modality ("CT", "MR", ...); a phone always gets one viewport.
 * @param {string | undefined} modality @param {boolean} phone
 * @returns {{layout: string, planes: string[]}}
 */
export function hangingProtocol(modality, phone) {
  if (phone) return DEFAULT_PROTOCOL;
  return HANGING_PROTOCOLS[String(modality || "").toUpperCase()] || DEFAULT_PROTOCOL;
}

/** How many viewports a layout has. @param {string} layout @returns {number} */
export function viewportCount(layout) {
  const l = LAYOUTS[layout] || LAYOUTS["1x1"];
  return l.rows * l.columns;
}
