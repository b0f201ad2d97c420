// Key images: the images of a record a physician marks as the ones that matter (key K or the
// ★ button), listed in a panel under the viewports; a click on one shows it in the active
// viewport. They are kept by the render node with the record (GET/PUT/DELETE
// …/records/{id}/key-images, docs/API.md), so they are there after a reload and for every reader.
// The panel lists those of the record the active viewport shows (series.js), from its own node.

import { h, mount } from "./dom.js";
import { planeInfo } from "./geometry.js";
import { planeLabel } from "./viewoptions.js";

export class KeyImages {
  /** @param {any} shell the viewer (viewer.js): ctx, record (the one it opened with), active */
  constructor(shell) {
    this.shell = shell;
    /** @type {any} the OpenRecord whose key images are listed */
    this.record = shell.record;
    /** @type {Array<{plane: string, index: number, marked_by: string, marked_at: string}>} */
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

  /** The record's key images, from its node. */
  async load() {
    try {
      const record = this.record;
      const listing = await this.shell.ctx.session.fetchJson(record.node.url, this.path);
      if (record === this.record) this.show(listing);
    } catch (err) {
      if (!err.isAuthFailure) this.status.textContent = `The key images could not be read: ${this.shell.ctx.describeError(err)}`;
    }
  }

  /** @param {any} vp @returns {{plane: string, index: number}|null} the image `vp` shows (none in 3D) */
  current(vp) {
    return vp && vp.state.plane !== "3d" ? { plane: vp.state.plane, index: vp.index() } : null;
  }

  /** @param {{plane: string, index: number}|null} image */
  isKey(image) {
    return Boolean(image && this.items.some((i) => i.plane === image.plane && i.index === image.index));
  }

  /** Mark the image `vp` shows, or unmark it when it is a key image already. @param {any} vp */
  async toggle(vp) {
    const image = this.current(vp);
    if (!image) {
      this.shell.ctx.announce("A 3D view cannot be a key image: mark a slice or a reformat.");
      return;
    }
    const url = `${this.path}/${image.plane}/${image.index}`;
    const unmark = this.isKey(image);
    try {
      const session = this.shell.ctx.session;
      if (unmark) {
        await session.fetchJson(this.record.node.url, url, { method: "DELETE" });
        this.show({ items: this.items.filter((i) => !(i.plane === image.plane && i.index === image.index)) });
      } else {
        this.show(await session.fetchJson(this.record.node.url, url, { method: "PUT" }));
      }
      this.shell.ctx.announce(`${this.label(image)} ${unmark ? "is no longer a key image" : "marked as a key image"}.`);
    } catch (err) {
      if (!err.isAuthFailure) this.shell.ctx.announce(`The key image could not be saved: ${this.shell.ctx.describeError(err)}`);
    }
  }

  /** "Axial 12 / 240" or, for a stored slice, "Slices 12 / 248 · Im 237". @param {{plane: string, index: number}} image */
  label(image) {
    const meta = this.record.meta;
    const count = planeInfo(meta, image.plane).count;
    const slice = image.plane === "native" && Array.isArray(meta.slices) ? meta.slices[image.index] : null;
    const instance = slice && slice.instance != null ? ` · Im ${slice.instance}` : "";
    return `${planeLabel(image.plane)} ${image.index + 1} / ${count}${instance}`;
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
        type: "button", class: "btn btn-quiet key-image-item", dataset: { plane: item.plane, index: String(item.index) },
        text: `${series} · ${this.label(item)}`, title: `Marked by ${item.marked_by}`, onclick: () => this.go(item),
      }))));
    this.sync(this.shell.active);
  }

  /** Show a key image in the active viewport. @param {{plane: string, index: number}} item */
  go(item) {
    const vp = this.shell.active;
    if (vp.state.plane !== item.plane) this.shell.setPlane(item.plane);
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
