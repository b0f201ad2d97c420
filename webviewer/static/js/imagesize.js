// The width and height an encoded image declares, read from its first bytes before the browser
// decodes it. A node that is broken or taken over can send a few kilobytes of PNG that decode to
// gigabytes (a 30,000 x 30,000 picture of one colour compresses to almost nothing): the tab would
// run out of memory in createImageBitmap. The viewer asks every image for a box (`size`,
// `viewport`) and the node never sends one larger (docs/API.md), so api.js `readImage` refuses an
// image larger than its box before anything decodes it. Only what a node may send is read: PNG,
// JPEG and WebP; anything else has no size here and is refused.

/** How many bytes of an image are read for its size: a JPEG's frame header may follow its
 *  application segments (the node writes none; 64 KiB leaves room for a few). */
export const SIZE_BYTES = 64 * 1024;

/** @typedef {{width: number, height: number}} ImageSize */

/** @param {Uint8Array} b @param {number} at */
const u16be = (b, at) => (b[at] << 8) | b[at + 1];
/** @param {Uint8Array} b @param {number} at */
const u16le = (b, at) => b[at] | (b[at + 1] << 8);
/** @param {Uint8Array} b @param {number} at */
const u24le = (b, at) => b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
/** @param {Uint8Array} b @param {number} at */
const u32be = (b, at) => ((b[at] << 24) >>> 0) + ((b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]);
/** @param {Uint8Array} b @param {number} at @param {string} text */
const startsWith = (b, at, text) => b.length >= at + text.length && [...text].every((c, i) => b[at + i] === c.charCodeAt(0));

/** PNG (ISO/IEC 15948): the signature, then the IHDR chunk, whose first fields are width and height. */
function png(b) {
  if (!startsWith(b, 0, "\x89PNG\r\n\x1a\n") || !startsWith(b, 12, "IHDR") || b.length < 24) return null;
  return { width: u32be(b, 16), height: u32be(b, 20) };
}

/** The JPEG markers that start a frame (SOF0-SOF15 but DHT C4, JPG C8 and DAC CC): its header holds the size. */
const FRAME_MARKERS = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

/** JPEG (ITU T.81, B.2): segments after SOI until the frame header; a scan before it has no size. */
function jpeg(b) {
  if (b[0] !== 0xff || b[1] !== 0xd8) return null;
  let at = 2;
  while (at + 3 < b.length) {
    if (b[at] !== 0xff) return null;
    const marker = b[at + 1];
    if (marker === 0xff) { at += 1; continue; }   // fill bytes before a marker
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { at += 2; continue; }   // no length
    if (marker === 0xda || marker === 0xd9) return null;   // a scan or the end before any frame
    const length = u16be(b, at + 2);
    if (length < 2) return null;
    if (FRAME_MARKERS.has(marker)) {
      if (at + 8 >= b.length) return null;
      return { width: u16be(b, at + 7), height: u16be(b, at + 5) };
    }
    at += 2 + length;
  }
  return null;
}

/** WebP (RFC 9649): the first chunk after the RIFF header is a lossy, lossless or extended one. */
function webp(b) {
  if (!startsWith(b, 0, "RIFF") || !startsWith(b, 8, "WEBP") || b.length < 30) return null;
  if (startsWith(b, 12, "VP8 ") && b[23] === 0x9d && b[24] === 0x01 && b[25] === 0x2a) {
    return { width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  }
  if (startsWith(b, 12, "VP8L") && b[20] === 0x2f) {
    const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24);
    return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (startsWith(b, 12, "VP8X")) return { width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 };
  return null;
}

/**
 * The size `head` (an image's first bytes, SIZE_BYTES of them or all it has) declares, or null
 * when it is none of PNG, JPEG and WebP or its header is cut or malformed.
 * @param {Uint8Array} head
 * @returns {ImageSize|null}
 */
export function imageSize(head) {
  return png(head) ?? jpeg(head) ?? webp(head);
}

/**
 * The box a request's `size` parameter ("WxH", as viewport.js asks) names.
 * @param {string} size
 * @returns {{width: number, height: number}}
 */
export function askedBox(size) {
  const [width, height] = String(size).split("x").map(Number);
  return { width, height };
}
