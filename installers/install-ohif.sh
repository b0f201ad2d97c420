#!/usr/bin/env bash
# The built OHIF viewer (npm package @ohif/app, its dist/ folder) for the browser test that uses
# OHIF as a real DICOMweb client of a render node (tests/dicomweb/test_ohif.py). Called by
# run-tests.sh; idempotent and quiet once installed.
#
# The version and its integrity are pinned: `npm pack` checks the tarball against the registry's
# integrity, and this script checks it again against the value below, so a changed package is
# refused rather than tested against. The dist goes into build/ohif/ (ignored by git); the test
# skips, naming this script, where it is absent.
set -euo pipefail
OHIF_VERSION=3.13.2
OHIF_INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${OHIF_DIR:-$repo/build/ohif}
stamp="$target/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$OHIF_VERSION $OHIF_INTEGRITY" ] && [ -f "$target/dist/index.html" ]; then
    exit 0
fi
command -v npm >/dev/null || { echo "install-ohif.sh: npm is needed (Debian package npm)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "Installing OHIF viewer @ohif/app@$OHIF_VERSION into $target"
(cd "$work" && npm pack --silent --cache "$work/npm-cache" "@ohif/app@$OHIF_VERSION" >/dev/null)
tarball="$work/ohif-app-$OHIF_VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$OHIF_INTEGRITY" ]; then
    echo "install-ohif.sh: @ohif/app@$OHIF_VERSION has integrity $actual, expected $OHIF_INTEGRITY" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work" package/dist
rm -rf "$target"
mkdir -p "$target"
mv "$work/package/dist" "$target/dist"
echo "$OHIF_VERSION $OHIF_INTEGRITY" >"$stamp"
