// Where things are: institutions (and their servers) from the toplevel, render nodes from each
// institution server. Cached for the session because they change rarely and the patient page asks
// for them on every visit.

import { listAll, ApiError } from "./api.js";
import { NODES } from "./answers.js";
import { INSTITUTIONS, RECORD_TYPES } from "./answers_toplevel.js";

export class Directory {
  constructor(session) {
    this.session = session;
    this._institutions = null;
    this._recordTypes = null;
    this._nodes = new Map();
  }

  async institutions() {
    if (!this._institutions) {
      this._institutions = listAll(this.session, this.session.toplevelUrl, "api/v1/institutions", {}, { shape: INSTITUTIONS })
        .catch((err) => { this._institutions = null; throw err; });
    }
    return this._institutions;
  }

  async institution(id) {
    const found = (await this.institutions()).find((i) => i.id === id);
    if (!found) throw new ApiError(404, "not_found", "this institution is not known to the toplevel");
    return found;
  }

  async ownInstitution() {
    return this.institution(this.session.user.institution_id);
  }

  async recordTypes() {
    if (!this._recordTypes) {
      this._recordTypes = listAll(this.session, this.session.toplevelUrl, "api/v1/record-types", {}, { shape: RECORD_TYPES })
        .catch((err) => { this._recordTypes = null; throw err; });
    }
    return this._recordTypes;
  }

  /** Render nodes of an institution, from its own server. */
  async nodes(institutionId) {
    if (!this._nodes.has(institutionId)) {
      const promise = this.institution(institutionId)
        .then((inst) => listAll(this.session, inst.server_url, "api/v1/nodes", {}, { shape: NODES }))
        .catch((err) => { this._nodes.delete(institutionId); throw err; });
      this._nodes.set(institutionId, promise);
    }
    return this._nodes.get(institutionId);
  }

  async node(institutionId, nodeId) {
    const found = (await this.nodes(institutionId)).find((n) => n.id === nodeId);
    if (!found) throw new ApiError(404, "not_found", "the render node holding this record is not registered at its institution");
    return found;
  }

  /** The nodes that can serve a record stored on `nodeId`, in the order to try them: the node
   *  itself, then those sharing its object store (the institution server's `serving_node_ids`). */
  async servingNodes(institutionId, nodeId) {
    const nodes = await this.nodes(institutionId);
    const own = await this.node(institutionId, nodeId);
    const ids = own.serving_node_ids || [own.id];
    return ids.map((id) => nodes.find((n) => n.id === id)).filter(Boolean);
  }
}
