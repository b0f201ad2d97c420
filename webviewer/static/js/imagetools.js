// The picture tools of the toolbar and their keys: invert (rendered by the node, `invert=true`),
// rotate a quarter either way and flip left-right or top-bottom (the browser turns the element
// that shows the picture; geometry.js maps every tool through the turn), and reset. Each acts on
// the active viewport and stays with it while it scrolls; Reset view (key 0) undoes them all.

import { h } from "./dom.js";

/** [action, label, key, title]: the buttons, in toolbar order; `key` is KeyboardEvent.key. */
export const IMAGE_ACTIONS = [
  ["invert", "Invert", "N", "Show the image inverted, black as white (N)"],
  ["rotate-left", "⟲ 90°", "[", "Rotate a quarter turn anticlockwise ([)"],
  ["rotate-right", "⟳ 90°", "]", "Rotate a quarter turn clockwise (])"],
  ["flip-h", "Flip ↔", "H", "Mirror left-right (H)"],
  ["flip-v", "Flip ↕", "U", "Mirror top-bottom (U)"],
];

/** Do `action` on viewport `vp` (viewport.js). @param {any} vp @param {string} action */
export function imageAction(vp, action) {
  if (action === "invert") vp.toggleInvert();
  else if (vp.state.plane === "3d") return;   // the 3D view turns with its own rotation
  else if (action === "rotate-left") vp.rotate(-1);
  else if (action === "rotate-right") vp.rotate(1);
  else if (action === "flip-h") vp.flip("h");
  else if (action === "flip-v") vp.flip("v");
}

/**
 * The toolbar group of the picture tools. `activeViewport()` is the viewport they act on.
 * @param {() => any} activeViewport @returns {{group: HTMLElement, sync: (vp: any) => void}}
 */
export function imageToolGroup(activeViewport) {
  const buttons = IMAGE_ACTIONS.map(([action, text, , title]) => h("button", {
    type: "button", class: "btn", id: `image-${action}`, text, title, "aria-label": title,
    onclick: () => imageAction(activeViewport(), action),
  }));
  const group = h("div", { class: "tb-group", role: "group", "aria-label": "Invert, rotate and flip" }, ...buttons);
  /** The buttons follow the active viewport: Invert pressed or not; no rotate or flip in 3D. */
  const sync = (vp) => {
    const s = vp.state;
    for (const b of buttons) {
      if (b.id === "image-invert") b.setAttribute("aria-pressed", String(s.invert));
      else b.hidden = s.plane === "3d";
    }
  };
  return { group, sync };
}

/** The action of a key, or null. @param {KeyboardEvent} e @returns {string|null} */
export function imageActionForKey(e) {
  const found = IMAGE_ACTIONS.find(([, , key]) => key.toLowerCase() === e.key.toLowerCase());
  return found ? found[0] : null;
}
