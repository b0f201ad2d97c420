#!/usr/bin/env bash
# Remove what install.sh installed: units, virtual environment, configs, desktop entry.
#
# Databases and DICOM stores under the data folder stay unless --purge-data, and so do the keys in
# <etc>/keys: a kept store cannot be decrypted without its node's store key, and kept data needs
# the same signing key to be served to the same users again. --purge-data removes both and the
# system user.
set -euo pipefail

# shellcheck source=installers/folders.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/folders.sh"
PURGE=0

usage() {
    cat <<EOF
Usage: $0 [--prefix DIR] [--etc DIR] [--data DIR] [--root DIR] [--purge-data] [--no-systemctl]
  The folders must be those given to install.sh. --purge-data also deletes the data folder, the
  keys and the system user.
EOF
}

while (($#)); do
    shared_option "$@"
    if ((SHIFT)); then shift "$SHIFT"; continue; fi
    case "$1" in
        --purge-data) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
check_folders

R_UNITS="$ROOT/etc/systemd/system"

# Enabled instances (sivr-render@1-2.service, ...) are known only from their wants links.
enabled_units() {
    local link
    for link in "$R_UNITS"/*.wants/sivr-*.service; do
        if [[ -L "$link" ]]; then basename "$link"; fi
    done | sort -u
}

remove_units() {
    local units
    mapfile -t units < <(enabled_units)
    if ((SYSTEMCTL)) && ((${#units[@]})); then
        say "disabling ${units[*]}"
        if [[ -n "$ROOT" ]]; then
            systemctl --root="$ROOT" disable "${units[@]}"
        else
            systemctl disable --now "${units[@]}"
        fi
    fi
    say "removing units from $R_UNITS"
    rm -f "$R_UNITS"/*.wants/sivr-*.service "$R_UNITS"/sivr-*.service
    if ((SYSTEMCTL)) && [[ -z "$ROOT" ]]; then
        systemctl daemon-reload
    fi
}

remove_program() {
    say "removing $ROOT$PREFIX/venv"
    rm -rf "$ROOT$PREFIX/venv"
    rmdir "$ROOT$PREFIX" 2>/dev/null || true
    if [[ "$(readlink "$ROOT/usr/local/bin/sivr" 2>/dev/null)" == "$PREFIX/venv/bin/sivr" ]]; then
        rm -f "$ROOT/usr/local/bin/sivr"
    fi
    rm -f "$ROOT/usr/share/applications/sivr-admin.desktop" \
        "$ROOT/usr/share/icons/hicolor/scalable/apps/sivr-admin.svg"
}

remove_config() {
    [[ -d "$ROOT$ETC" ]] || return 0
    if ((PURGE)); then
        say "removing $ROOT$ETC"
        rm -rf "$ROOT$ETC"
        return
    fi
    say "removing configs and certificates from $ROOT$ETC; keeping $ROOT$ETC/keys for the kept data"
    find "$ROOT$ETC" -mindepth 1 -maxdepth 1 ! -name keys -exec rm -rf {} +
}

remove_data() {
    if ((!PURGE)); then
        [[ ! -d "$ROOT$DATA" ]] || say "kept $ROOT$DATA (databases and stores); --purge-data deletes it"
        return
    fi
    say "removing $ROOT$DATA and the daemons' caches"
    rm -rf "$ROOT$DATA" "$ROOT"/var/cache/sivr-*
    if [[ -z "$ROOT" ]] && getent passwd "$SERVICE_USER" >/dev/null; then
        say "removing system user $SERVICE_USER"
        userdel "$SERVICE_USER"
    fi
}

remove_units
remove_program
remove_config
remove_data
