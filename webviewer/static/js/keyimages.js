// Key images: the images of a record a physician marks as the ones that matter (key K or the
// ★ button), listed in a panel under the viewports; a click on one shows it in the active
// viewport. They are kept by the render node with the record (GET/PUT/DELETE
// …/records/{id}/key-images, docs/API.md), so they are there after a reload and for every reader.
// The panel lists those of the record the active viewport shows (series.js), from its own node.

import { keyImagesShape } from "./answers.js";
import { h, mount } from "./dom.js";
import { planeInfo } from "./geometry.js";
import { planesFor, timeOf } from "./stacks.js";
import { planeLabel } from "./viewoptions.js";

/**
 * An image as a mark names it (docs/API.md): the view and its index, the stack a reformat cuts
 * (null on the stored slices: the index names the frame) and the time point shown (null where the
 * stack has one, or none was recorded).
 * @typedef {{plane: string, index: number, stack: string|null, phase: number|null}} KeyImageRef
 */

/**
 * The time point `vp`'s image is of, when its stack has several: a stored slice's is that of its
 * frame in the stack holding it (whichever stack is chosen); a reformat's the viewport's (Viewport.timePoint).
 * @param {any} vp @returns {number|null}
 */
export function timePointShown(vp) {
  const record = vp.record;
  if (vp.state.plane === "native") {
    const index = vp.index();
    const stack = record.stacks.find((/** @type {any} */ st) => timeOf(st, index) >= 0);
    return stack && stack.phases.length > 1 ? timeOf(stack, index) : null;
  }
  return record.stack && record.stack.phases.length > 1 ? vp.timePoint() : null;
}

/** The stack a mark's reformat is of: a mark that recorded none (made before marks named one) is of
 *  the record's first, as the viewer then showed it. @param {any} record @param {KeyImageRef} image */
function stackOf(record, image) {
  if (image.plane === "native") return null;
  return image.stack ?? (record.stacks[0] ? record.stacks[0].id : null);
}

/** @param {any} record @param {KeyImageRef} a @param {KeyImageRef} b */
function sameImage(record, a, b) {
  return a.plane === b.plane && a.index === b.index && stackOf(record, a) === stackOf(record, b)
    && (a.phase ?? null) === (b.phase ?? null);
}

export class KeyImages {
  /** @param {any} shell the viewer (viewer.js): ctx, record (the one it opened with), active */
  constructor(shell) {
    this.shell = shell;
    /** @type {any} the OpenRecord whose key images are listed */
    this.record = shell.record;
    /** @type {Array<KeyImageRef & {marked_by: string, marked_at: string}>} */
    this.items = [];
    this.button = h("button", {
      type: "button", class: "btn", id: "key-image", "aria-pressed": "false", text: "☆ Key image",
      title: "Mark or unmark the image shown as a key image (K)", onclick: () => this.toggle(shell.active),
    });
    this.list = h("ol", { class: "key-image-list", id: "key-image-list" });
    this.status = h("p", { class: "muted", id: "key-image-status", text: "Loading the key images…" });
    this.panel = h("section", { class: "key-images", id: "key-images", "aria-label": "Key images" },
      h("h2", { text: "Key images" }), this.status, this.list);
  }

  get path() {
    return `${this.record.path}/key-images`;
  }

  /** The shape of the node's listing of the key images of the record listed (answers.js). */
  get shape() {
    return keyImagesShape({ frames: this.record.meta.frames, planes: this.record.planes, stacks: this.record.stacks });
  }

  /** The record's key images, from its node. */
  async load() {
    const record = this.record;
    try {
      const listing = await this.shell.ctx.session.fetchJson(record.node.url, this.path, { shape: this.shape });
      if (record === this.record) this.show(listing);
    } catch (err) {
      if (record === this.record && !err.isAuthFailure) this.status.textContent = `The key images could not be read: ${this.shell.ctx.describeError(err)}`;
    }
  }

  /** @param {any} vp @returns {KeyImageRef|null} the image `vp` shows (none in 3D) */
  current(vp) {
    if (!vp || vp.state.plane === "3d") return null;
    const plane = vp.state.plane;
    const stack = plane !== "native" && vp.record.stack ? vp.record.stack.id : null;
    return { plane, index: vp.index(), stack, phase: timePointShown(vp) };
  }

  /** @param {KeyImageRef|null} image */
  isKey(image) {
    return Boolean(image && this.items.some((i) => sameImage(this.record, i, image)));
  }

  /** The node's URL of a mark. @param {KeyImageRef} image */
  url(image) {
    const query = new URLSearchParams();
    if (image.stack != null) query.set("stack", image.stack);
    if (image.phase != null) query.set("phase", String(image.phase));
    const tail = query.toString();
    return `${this.path}/${image.plane}/${image.index}${tail ? `?${tail}` : ""}`;
  }

  /** Mark the image `vp` shows, or unmark it when it is a key image already. @param {any} vp */
  async toggle(vp) {
    const image = this.current(vp);
    if (!image) {
      this.shell.ctx.announce("A 3D view cannot be a key image: mark a slice or a reformat.");
      return;
    }
    const unmark = this.isKey(image);
    // unmark the very mark listed (one made before marks named their stack names none)
    const url = this.url(unmark ? this.items.find((i) => sameImage(this.record, i, image)) || image : image);
    try {
      const session = this.shell.ctx.session;
      if (unmark) {
        await session.fetchJson(this.record.node.url, url, { method: "DELETE" });
        this.show({ items: this.items.filter((i) => !sameImage(this.record, i, image)) });
      } else {
        this.show(await session.fetchJson(this.record.node.url, url, { method: "PUT", shape: this.shape }));
      }
      this.shell.ctx.announce(`${this.label(image)} ${unmark ? "is no longer a key image" : "marked as a key image"}.`);
    } catch (err) {
      if (!err.isAuthFailure) this.shell.ctx.announce(`The key image could not be saved: ${this.shell.ctx.describeError(err)}`);
    }
  }

  /**
   * "Axial 12 / 240", on a record of several stacks "PHASE · Axial 12 / 24", at a time point of
   * several "… · Time 2 / 3"; a stored slice "Slices 12 / 248 · Im 237". @param {KeyImageRef} image
   */
  label(image) {
    const record = this.record;
    const meta = record.meta;
    const stackId = stackOf(record, image);
    const stack = record.stacks.find((/** @type {any} */ st) => st.id === stackId) || null;
    const count = planeInfo(stack ? { ...meta, planes: planesFor(record.planes, stack) } : meta, image.plane).count;
    const slice = image.plane === "native" && Array.isArray(meta.slices) ? meta.slices[image.index] : null;
    const instance = slice && slice.instance != null ? ` · Im ${slice.instance}` : "";
    const phases = stack ? stack.phases.length : (record.stacks.find((/** @type {any} */ st) => timeOf(st, image.index) >= 0) || { phases: [] }).phases.length;
    const time = image.phase != null ? ` · Time ${image.phase + 1} / ${phases}` : "";
    const named = stack && record.stacks.length > 1 ? `${stack.label} · ` : "";
    return `${named}${planeLabel(image.plane)} ${image.index + 1} / ${count}${instance}${time}`;
  }

  /** @param {{items: any[]}} listing */
  show(listing) {
    this.items = listing.items;
    const meta = this.record.meta;
    const series = meta.series_description || meta.description || meta.modality || "Series";
    this.status.textContent = this.items.length ? "" : "None yet: press K (or ☆ Key image) on an image to mark it.";
    this.status.hidden = Boolean(this.items.length);
    mount(this.list, this.items.map((item) => h("li", {},
      h("button", {
        type: "button", class: "btn btn-quiet key-image-item",
        dataset: { plane: item.plane, index: String(item.index), stack: stackOf(this.record, item) || "", phase: String(item.phase ?? "") },
        text: `${series} · ${this.label(item)}`, title: `Marked by ${item.marked_by}`, onclick: () => this.go(item),
      }))));
    this.sync(this.shell.active);
  }

  /** Show a key image in the active viewport: its stack, view, time point and index (a stored
   *  slice's index is its frame, so its time point too). @param {KeyImageRef} item */
  go(item) {
    const vp = this.shell.active;
    const stack = stackOf(this.record, item);
    if (stack != null && (!vp.record.stack || vp.record.stack.id !== stack)) this.shell.chooseStack(stack);
    if (vp.state.plane !== item.plane) this.shell.setPlane(item.plane);
    if (item.plane !== "native" && item.phase != null) vp.setTime(item.phase);   // a stored slice is its own
    vp.setIndex(item.index);
    vp.root.focus({ preventScroll: true });
  }

  /** The ★ button says whether the image the active viewport shows is a key image; the list
   *  follows the record it shows. @param {any} vp */
  sync(vp) {
    if (vp && vp.record && vp.record !== this.record) {
      this.record = vp.record;
      this.items = [];
      this.load();
    }
    const key = this.isKey(this.current(vp));
    this.button.setAttribute("aria-pressed", String(key));
    this.button.textContent = key ? "★ Key image" : "☆ Key image";
    this.button.disabled = !this.current(vp);
  }
}
