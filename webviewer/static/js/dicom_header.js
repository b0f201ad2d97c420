// The patient a DICOM file names, read in the browser from the first bytes of the file (issue 11):
// before an upload starts, the viewer compares it with the SIVR patient the upload is for
// (upload_identity.js). Only the file meta and the elements up to the patient module's group
// (0010) are walked: no pixel data is read or decoded here (the render node does all of that), and
// the institution checks the patient again from the node's signed receipt, so this reading only
// decides when to ask the physician before anything is sent.

import { asShown } from "./api.js";

const EXPLICIT_LONG = new Set(["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]);
const IMPLICIT_LE = "1.2.840.10008.1.2";
const UNDEFINED = 0xffffffff;
const PATIENT = { 0x0010: "name", 0x0020: "patient_id", 0x0021: "issuer", 0x0030: "birth_date", 0x0040: "sex" };
const FIRST_READ = 64 * 1024;
const LAST_READ = 4 * 1024 * 1024;
const SEQUENCE = 0;
const ITEM = 1;
/** What ends a sequence (FFFE,E0DD) and an item (FFFE,E00D) of undefined length. */
const DELIMITER = [0xe0dd, 0xe00d];

/** Ran past the bytes read: read more of the file and walk again. */
class Short extends Error {}

/** A little-endian element walker over `view`, explicit or implicit VR. */
class Walker {
  constructor(view, explicit) {
    this.view = view;
    this.explicit = explicit;
    this.pos = 0;
  }

  need(bytes) {
    if (this.pos + bytes > this.view.byteLength) throw new Short();
  }

  /** The next element's header: {group, element, vr, length}; the position is then at its value. */
  header() {
    this.need(8);
    const v = this.view;
    const group = v.getUint16(this.pos, true);
    const element = v.getUint16(this.pos + 2, true);
    if (group === 0xfffe) { // item and delimiters have no VR
      const length = v.getUint32(this.pos + 4, true);
      this.pos += 8;
      return { group, element, vr: "", length };
    }
    if (!this.explicit) {
      const length = v.getUint32(this.pos + 4, true);
      this.pos += 8;
      return { group, element, vr: length === UNDEFINED ? "SQ" : "", length };
    }
    const vr = String.fromCharCode(v.getUint8(this.pos + 4), v.getUint8(this.pos + 5));
    if (EXPLICIT_LONG.has(vr)) {
      this.need(12);
      const length = v.getUint32(this.pos + 8, true);
      this.pos += 12;
      return { group, element, vr, length };
    }
    const length = v.getUint16(this.pos + 6, true);
    this.pos += 8;
    return { group, element, vr, length };
  }

  bytes(length) {
    this.need(length);
    const out = new Uint8Array(this.view.buffer, this.view.byteOffset + this.pos, length);
    this.pos += length;
    return out;
  }

  /** Step over a value, including a sequence of undefined length: its items and their elements are
   *  walked to their delimiters with a stack of what the walk is in, not by recursion (a crafted file
   *  nesting 200,000 sequences in its 4 MiB ran past the browser's call stack, and the upload form
   *  said nothing). */
  skip(item) {
    if (item.length !== UNDEFINED) {
      this.need(item.length);
      this.pos += item.length;
      return;
    }
    const open = [SEQUENCE];
    while (open.length) {
      const inside = open[open.length - 1];
      const next = this.header();
      if (next.group === 0xfffe && next.element === DELIMITER[inside]) {
        open.pop();
      } else if (next.length !== UNDEFINED) {
        this.need(next.length);
        this.pos += next.length;
      } else { // a sequence's item of undefined length, or an item's sequence of undefined length
        open.push(inside === SEQUENCE ? ITEM : SEQUENCE);
      }
    }
  }
}

function text(bytes, decoder) {
  return asShown(decoder.decode(bytes).replace(/[\0\s]+$/, "").trim());
}

/** The decoder of a Specific Character Set (0008,0005): UTF-8, else Latin-1 (what SIVR's patients use). */
function decoderFor(charset) {
  return new TextDecoder(/ISO_IR 192/.test(charset) ? "utf-8" : "iso-8859-1");
}

/** Walk `buffer` (the start of a Part 10 file, all of it when `complete`); the patient, or null when
 *  the file is not one this reads. */
function walk(buffer, complete) {
  const view = new DataView(buffer);
  if (view.byteLength < 132 || text(new Uint8Array(buffer, 128, 4), new TextDecoder("ascii")) !== "DICM") return null;
  const meta = new Walker(new DataView(buffer, 132), true);
  let syntax = "";
  for (;;) {
    meta.need(2);
    if (view.getUint16(132 + meta.pos, true) !== 0x0002) break;
    const item = meta.header();
    if (item.element === 0x0010) syntax = text(meta.bytes(item.length), new TextDecoder("ascii"));
    else meta.skip(item);
  }
  // deflated and big-endian data sets are rare and are not read here (the institution still checks)
  if (syntax.startsWith("1.2.840.10008.1.2.1.99") || syntax === "1.2.840.10008.1.2.2") return null;
  const data = new Walker(new DataView(buffer, 132 + meta.pos), syntax !== IMPLICIT_LE);
  const found = { name: "", patient_id: "", issuer: "", birth_date: "", sex: "" };
  let decoder = decoderFor("");
  const raw = {};
  for (;;) {
    if (data.pos + 8 > data.view.byteLength) {
      if (complete) break; // a file that ends before group 0010 ends
      throw new Short();
    }
    const item = data.header();
    if (item.group > 0x0010) break;
    if (item.group === 0x0008 && item.element === 0x0005) decoder = decoderFor(text(data.bytes(item.length), new TextDecoder("ascii")));
    else if (item.group === 0x0010 && PATIENT[item.element] && item.length !== UNDEFINED) raw[PATIENT[item.element]] = data.bytes(item.length);
    else data.skip(item);
  }
  for (const [key, bytes] of Object.entries(raw)) found[key] = text(bytes, decoder);
  return found;
}

/**
 * The DICOM patient a file names: {name, patient_id, issuer, birth_date, sex} (DICOM values: PN,
 * DA as YYYYMMDD), or null when it cannot be read in the browser (not Part 10, deflated, damaged).
 * @param {Blob} file
 */
export async function readDicomPatient(file) {
  for (let size = FIRST_READ; ; size *= 4) {
    const buffer = await file.slice(0, Math.min(size, file.size)).arrayBuffer();
    try {
      return walk(buffer, buffer.byteLength >= file.size);
    } catch (err) {
      if (!(err instanceof Short)) throw err;
      if (size >= file.size || size >= LAST_READ) return null;
    }
  }
}
