// How much of a server's answer the viewer takes. The viewer talks to servers it does not control
// (every institution server and render node of the federation); a compromised, buggy or slow one
// must not freeze, break or spoof the page, so each of these bounds what one answer can cost.
// docs/viewer.md ("Servers that answer badly") and docs/operations.md (attacks 47-51, 81-84) say why.

/** A request (and reading its answer) that takes longer fails with "did not answer in time"; uploads,
 *  sent with XMLHttpRequest (upload.js), are not bounded by it. */
export const REQUEST_TIMEOUT_MS = 45_000;

/** The largest JSON answer read (a page of a list, a record's metadata, an error body). */
export const MAX_JSON_BYTES = 32 * 1024 * 1024;

/** A rendered image: at most this many bytes on the wire (the largest the viewer asks for, a
 *  2048 x 2048 lossless PNG in colour, is under 13 MiB), and never larger than the box it was asked
 *  for (api.js `readImage`). */
export const MAX_IMAGE_BYTES = 32 * 1024 * 1024;

/** A list read page by page (`listAll`) stops after this many pages or bytes and says it was cut. */
export const MAX_LIST_PAGES = 100;
export const MAX_LIST_BYTES = 64 * 1024 * 1024;

/** A server's text shown as an error: one line of at most this many characters. */
export const MAX_ERROR_CHARS = 500;

/** A name or a description shown as a label (patient, series, record): at most this many characters. */
export const MAX_LABEL_CHARS = 160;

/** A window's centre and width stay below this in size (modality units): the node refuses a larger
 *  one (daemons/render/api/query.MAX_VALUE), and a width dragged wider on every drag (each widens by
 *  a share of the width it starts from) reached it in eight drags, after which every image of the
 *  viewport was refused. tests/webviewer/test_browser_edges.py holds the two to one value. */
export const MAX_WINDOW_VALUE = 1e9;
