// The 3D (DVR) presets of each record: the node serves those of a modality with the one a DVR view
// of it starts with (GET /api/v1/presets?modality=, transfer.default_preset), so a CT viewport
// offers CT transfer functions and an MR viewport beside it MR ones. Asked once per node and
// modality, however many records and viewports share them; each OpenRecord (series.js) keeps its own.
import { apiPath } from "./api.js";
import { PRESETS } from "./answers.js";

/** @typedef {{volume: string[], volume_default: string}} VolumePresetList */

/** @type {VolumePresetList} none known (yet): a DVR view then gets the node's default for its modality */
export const NO_VOLUME_PRESETS = Object.freeze({ volume: [], volume_default: "" });

export class VolumePresets {
  /** @param {any} ctx the app context (session) */
  constructor(ctx) {
    this.ctx = ctx;
    /** @type {Map<string, Promise<VolumePresetList>>} by node URL and modality */
    this.known = new Map();
  }

  /**
   * The presets of `record`'s modality on its node (a failed request: none, and a DVR view takes
   * the node's default). @param {{node: {url: string}, meta: {modality?: string}}} record
   * @returns {Promise<VolumePresetList>}
   */
  of(record) {
    const modality = String(record.meta.modality || "").toUpperCase();
    const key = `${record.node.url} ${modality}`;
    let found = this.known.get(key);
    if (!found) {
      found = this.ctx.session.fetchJson(record.node.url, apiPath`api/v1/presets?modality=${modality}`, { shape: PRESETS })
        .then((p) => ({ volume: p.volume || [], volume_default: p.volume_default || "" }))
        .catch(() => NO_VOLUME_PRESETS);
      this.known.set(key, found);
    }
    return found;
  }
}
