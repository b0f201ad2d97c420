# shellcheck shell=bash disable=SC2034  # the variables are read by the scripts that source this
# Sourced by install.sh and uninstall.sh: the folders both work on, the options naming them, and
# the checks both need before touching anything. One definition, so an uninstall always agrees
# with the install about where things are.

PREFIX=/opt/sivr
ETC=/etc/sivr
DATA=/var/lib/sivr
ROOT=""
SYSTEMCTL=1
SERVICE_USER=sivr
SHIFT=0

die() { echo "$(basename "$0"): $*" >&2; exit 2; }
say() { echo "==> $*"; }

# shared_option "$@": take one of the options both scripts accept; SHIFT says how many words it
# used (0: not one of them, the caller parses it).
shared_option() {
    SHIFT=2
    case "$1" in
        --prefix) PREFIX="${2:?}" ;;
        --etc) ETC="${2:?}" ;;
        --data) DATA="${2:?}" ;;
        --root) ROOT="${2:?}" ;;
        --no-systemctl) SYSTEMCTL=0; SHIFT=1 ;;
        *) SHIFT=0 ;;
    esac
}

# check_folders: paths go into unit files through sed and uninstall.sh deletes them, so they must
# be plain absolute paths and never / itself; a relative --root becomes absolute.
check_folders() {
    local path
    for path in "$PREFIX" "$ETC" "$DATA"; do
        [[ "$path" =~ ^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$ ]] || die "$path: use a plain absolute path other than /"
    done
    [[ -z "$ROOT" || "$ROOT" == /* ]] || ROOT="$(pwd)/$ROOT"
    if [[ -z "$ROOT" && "$(id -u)" != 0 ]]; then
        die "run as root, or use --root DIR to work in a folder"
    fi
}
