#!/usr/bin/env bash
# Install SIVR daemons on this host under systemd: system user, virtual environment, configs with
# keys and certificates, data folders, hardened units, and the console's desktop entry.
#
# Idempotent: a re-run upgrades the installed package and the units but never replaces an existing
# config, key, certificate or database. With --root DIR everything goes under DIR (tests,
# packaging): no user is created, nothing is chown'ed, and units are enabled offline.
set -euo pipefail

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=installers/folders.sh
source "$SOURCE/installers/folders.sh"
# shellcheck source=installers/locked-pip.sh
source "$SOURCE/installers/locked-pip.sh"
LAYERS="web toplevel institution render"
INSTANCES=""
FROM=""
NODES=1
SYSTEM_PACKAGES=0
PYTHON=python3
HOSTNAMES=()
INSTITUTIONS=()
ALL_LAYERS="web toplevel institution render"
STAGING=""
FRESH_CONFIG=0
FRONT=1
FRONT_OPTION=""  # --front or --no-front, when given

usage() {
    cat <<EOF
Usage: $0 [options]
  --prefix DIR              where the virtual environment goes (default $PREFIX)
  --etc DIR                 configs, keys and certificates (default $ETC)
  --data DIR                databases and DICOM stores (default $DATA)
  --root DIR                install into DIR as if it were / (tests, packaging)
  --layers "L ..."          layers this host runs (default "$LAYERS")
  --from DIR                take configs and keys from a folder written by \`sivr init\` on the
                            machine that holds the CA (best: this host's share of it, cut with
                            installers/host_bundle.py) instead of running \`sivr init\` here
  --instances "NAME ..."    with --from: only these instances (e.g. "institution-2 render-2-1")
  --hostname NAME           name or address clients reach this host at (repeatable; certificates)
  --institution-name NAME   an institution for \`sivr init\` (repeatable)
  --nodes-per-institution N render nodes per institution for \`sivr init\` (default $NODES)
  --python PATH             Python 3.11+ to build the virtual environment from (default $PYTHON)
  --use-system-packages     reuse the dependencies the --python interpreter already has (even if it
                            is a virtual environment) and install SIVR with pip --no-deps: fast,
                            and offline where a build backend is at hand
  --front                   the default, without --from: \`sivr init --front\`, each instance behind
                            its own nginx (TLS, HTTP/2, slow clients buffered; unit
                            sivr-front@<instance>), gunicorn on loopback (with --from, instances
                            that have front/<instance>.conf get their front)
  --no-front                gunicorn serves TLS itself: only behind a buffering proxy of your own
                            (docs/deployment.md, "Slow clients")
  --no-systemctl            do not reload systemd or enable the units
EOF
}

while (($#)); do
    shared_option "$@"
    if ((SHIFT)); then shift "$SHIFT"; continue; fi
    case "$1" in
        --layers) LAYERS="${2:?}"; shift 2 ;;
        --from) FROM="${2:?}"; shift 2 ;;
        --instances) INSTANCES="${2:?}"; shift 2 ;;
        --hostname) HOSTNAMES+=("${2:?}"); shift 2 ;;
        --front) FRONT=1; FRONT_OPTION=$1; shift ;;
        --no-front) FRONT=0; FRONT_OPTION=$1; shift ;;
        --institution-name) INSTITUTIONS+=("${2:?}"); shift 2 ;;
        --nodes-per-institution) NODES="${2:?}"; shift 2 ;;
        --python) PYTHON="${2:?}"; shift 2 ;;
        --use-system-packages) SYSTEM_PACKAGES=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

check_folders
for layer in $LAYERS; do
    [[ " $ALL_LAYERS " == *" $layer "* ]] || die "unknown layer $layer (choose from: $ALL_LAYERS)"
done
[[ -z "$FROM" ]] || FROM="$(cd "$FROM" && pwd)"
[[ -n "$FROM" || -z "$INSTANCES" ]] || die "--instances needs --from"

R_PREFIX="$ROOT$PREFIX"
R_ETC="$ROOT$ETC"
R_DATA="$ROOT$DATA"
R_UNITS="$ROOT/etc/systemd/system"
VENV="$R_PREFIX/venv"

has_layer() { [[ " $LAYERS " == *" $1 "* ]]; }
has_config() { compgen -G "$R_ETC/*.toml" >/dev/null; }

# A deployment made here has its own signing key and CA: without its toplevel, no token it would
# accept could ever exist. Part of a larger deployment comes with --from.
# uninstall.sh leaves the keys of kept data behind; a fresh `sivr init` would pair them with new
# institution ids and certificates, so the kept data must come back with its own configs.
if [[ -z "$FROM" ]] && ! has_config && compgen -G "$R_ETC/keys/*" >/dev/null; then
    die "$ETC/keys holds keys but there is no config: restore the configs of that deployment \
(or install it again with --from its init folder or bundle), or remove $ETC/keys for a new one"
fi
if [[ -z "$FROM" ]] && ! has_config && ! has_layer toplevel; then
    die "without --from this host gets a new deployment, which needs the toplevel layer; \
install part of a deployment made elsewhere with --from (see docs/deployment.md)"
fi
owned() {  # owned USER:GROUP MODE PATH... — mode always, owner only on a real install
    local owner="$1" mode="$2"; shift 2
    chmod "$mode" "$@"
    [[ -n "$ROOT" ]] || chown "$owner" "$@"
}

create_user() {
    if [[ -n "$ROOT" ]]; then
        say "--root: not creating the system user $SERVICE_USER (a package's postinst does)"
        return
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        say "creating system user $SERVICE_USER"
        useradd --system --user-group --home-dir "$DATA" --no-create-home \
            --shell /usr/sbin/nologin --comment "SIVR daemons" "$SERVICE_USER"
    fi
    # The render node's OpenGL back end opens /dev/dri/renderD*, which belongs to group render.
    if has_layer render && getent group render >/dev/null; then
        usermod -a -G render "$SERVICE_USER"
    fi
}

reuse_system_packages() {
    local pip_args=(--quiet --disable-pip-version-check --no-deps)
    # --system-site-packages reaches the base interpreter's packages only; when --python is
    # itself a virtual environment (CI), its packages are added by a .pth file as well.
    "$PYTHON" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' \
        >"$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/sivr-host-packages.pth"
    # Without the `wheel` package an old setuptools cannot build in place; then let pip fetch
    # a current one into an isolated build environment (from its configured index or cache).
    if "$VENV/bin/python" -c 'import setuptools, wheel' 2>/dev/null; then
        pip_args+=(--no-build-isolation)
    fi
    say "installing SIVR from $SOURCE (reusing $PYTHON's packages)"
    "$VENV/bin/python" -m pip install "${pip_args[@]}" "$SOURCE"
}

install_venv() {
    local venv_args=()
    # pip too comes from the reused packages, which saves installing a copy into the venv.
    if ((SYSTEM_PACKAGES)); then venv_args+=(--system-site-packages --without-pip); fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating virtual environment $VENV"
        mkdir -p "$R_PREFIX"
        "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
    fi
    if ((!SYSTEM_PACKAGES)); then
        say "installing SIVR from $SOURCE with the locked requirements/runtime.txt"
        pip_install_locked "$VENV/bin/python" runtime "$SOURCE"
    else
        reuse_system_packages
    fi
    mkdir -p "$ROOT/usr/local/bin"
    ln -sfn "$PREFIX/venv/bin/sivr" "$ROOT/usr/local/bin/sivr"
}

write_config() {
    if has_config; then
        say "keeping the existing configuration in $R_ETC"
        # the options that make a configuration do nothing now: say so, not leave the admin to believe them
        local ignored=()
        [[ -z "$FROM" ]] || ignored+=(--from)
        [[ -z "$FRONT_OPTION" ]] || ignored+=("$FRONT_OPTION")
        ((${#HOSTNAMES[@]} == 0)) || ignored+=(--hostname)
        ((${#INSTITUTIONS[@]} == 0)) || ignored+=(--institution-name)
        ((NODES == 1)) || ignored+=(--nodes-per-institution)
        [[ -z "$INSTANCES" ]] || ignored+=(--instances)
        if ((${#ignored[@]})); then
            echo "$(basename "$0"): warning: ${ignored[*]} ignored: they shape a first install, and $R_ETC" \
                "already holds one (a re-run upgrades the package and the units only; docs/deployment.md," \
                "\"Upgrades\")" >&2
        fi
        return
    fi
    local from="$FROM" placed_args=(--layers "$LAYERS" --instances "$INSTANCES")
    if [[ -z "$from" ]]; then
        STAGING="$(mktemp -d)"
        trap 'rm -rf "$STAGING"' EXIT
        local init_args=(init --dir "$STAGING" --nodes-per-institution "$NODES")
        if ((FRONT)); then init_args+=(--front); else init_args+=(--no-front); fi
        local name
        for name in "${HOSTNAMES[@]}"; do init_args+=(--hostname "$name"); done
        for name in "${INSTITUTIONS[@]}"; do init_args+=(--institution-name "$name"); done
        say "sivr ${init_args[*]}"
        "$VENV/bin/sivr" "${init_args[@]}" >/dev/null
        from="$STAGING"
        # This host made its own CA, so it keeps the CA key (hidden from every daemon by the units).
        placed_args+=(--with-ca-key)
    fi
    say "placing instances of: $LAYERS"
    FRESH_CONFIG=1
    "$VENV/bin/python" "$SOURCE/installers/place_deployment.py" --from "$from" --etc "$R_ETC" \
        --data "$DATA" --data-real "$R_DATA" "${placed_args[@]}"
    if [[ -n "$STAGING" ]]; then
        rm -rf "$STAGING"
        trap - EXIT
    fi
}

# Instance names of the selected layers, from the config files present (web, institution-1, ...).
instances() {
    local file name
    for file in "$R_ETC"/*.toml; do
        [[ -e "$file" ]] || continue
        name="$(basename "$file" .toml)"
        if has_layer "${name%%-*}"; then echo "$name"; fi
    done
}

unit_of() {  # instance name -> unit name: render-1-2 -> sivr-render@1-2.service
    local name="$1" layer="${1%%-*}"
    if [[ "$name" == "$layer" ]]; then echo "sivr-$layer.service"; else echo "sivr-$layer@${name#*-}.service"; fi
}

set_permissions() {
    say "setting owners and modes"
    mkdir -p "$R_ETC/keys" "$R_ETC/tls" "$R_DATA"
    owned "root:$SERVICE_USER" 0750 "$R_ETC" "$R_ETC/keys" "$R_ETC/tls" "$R_DATA"
    local file
    for file in "$R_ETC"/*.toml; do owned "root:$SERVICE_USER" 0640 "$file"; done
    if [[ -d "$R_ETC/front" ]]; then
        owned "root:$SERVICE_USER" 0750 "$R_ETC/front"
        for file in "$R_ETC"/front/*.conf; do [[ ! -e "$file" ]] || owned "root:$SERVICE_USER" 0640 "$file"; done
    fi
    for file in "$R_ETC"/keys/* "$R_ETC"/tls/*; do
        [[ -e "$file" ]] || continue
        case "$file" in
            */tls/ca.key) owned root:root 0600 "$file" ;;
            */keys/*.pub|*/tls/*.pem) owned "root:$SERVICE_USER" 0644 "$file" ;;
            *) owned "$SERVICE_USER:$SERVICE_USER" 0600 "$file" ;;
        esac
    done
    local name
    for name in $(instances); do
        [[ "$name" != web ]] || continue
        mkdir -p "$R_DATA/$name"
        owned "$SERVICE_USER:$SERVICE_USER" 0700 "$R_DATA/$name"
        # Files placed from the init folder (the toplevel's SQLite database) become the daemon's;
        # an existing store is left alone, so a re-run does not walk every stored file.
        if ((FRESH_CONFIG)); then
            chmod -R go-rwx "$R_DATA/$name"
            [[ -n "$ROOT" ]] || chown -R "$SERVICE_USER:$SERVICE_USER" "$R_DATA/$name"
        fi
    done
}

# The render nodes' numba kernels take a minute or more to compile. They are compiled once here,
# into the cache folder each render unit points NUMBA_CACHE_DIR at (its CacheDirectory), so a node
# start loads them in about a second. The cache is keyed by the installed files' paths, so only
# a real install (no --root) can fill it; a node fills its own on its first start otherwise.
#
# As the service user, never as root: the render unit writes this cache, and numba unpickles its
# index files when it loads them, so a node taken over could plant a pickle there that an upgrade
# run as root would execute (and `cp -a`, `mkdir`, `chmod` as root follow links planted there).
warm_render_kernels() {
    local name first="" cache
    for name in $(instances); do
        [[ "${name%%-*}" == render ]] || continue
        cache="/var/cache/sivr-$name/numba"
        if [[ -n "$ROOT" ]]; then
            say "--root: the kernels of $name compile on its first start (into $cache)"
            continue
        fi
        # root touches only the unit's cache folder itself, which sits in root's /var/cache (nobody
        # else can put a link there); what is inside is the service's, and so is every step below
        install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0700 "$(dirname "$cache")"
        as_service_user mkdir -p -m 0700 "$cache"
        if [[ -z "$first" ]]; then
            say "compiling the render kernels into $cache (a minute or more)"
            as_service_user env NUMBA_CACHE_DIR="$cache" PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" \
                -m daemons.render.warm
            first="$cache"
        else
            as_service_user cp -a "$first/." "$cache/"
        fi
    done
}

as_service_user() {  # as_service_user COMMAND... — from / (root's working folder may be closed to it)
    (cd / && runuser -u "$SERVICE_USER" -- "$@")
}

install_units() {
    say "installing systemd units into $R_UNITS"
    mkdir -p "$R_UNITS"
    local unit
    for unit in "$SOURCE"/installers/systemd/*.service; do
        sed -e "/^#/!s|/opt/sivr|$PREFIX|g" -e "/^#/!s|/etc/sivr|$ETC|g" -e "/^#/!s|/var/lib/sivr|$DATA|g" \
            "$unit" >"$R_UNITS/$(basename "$unit")"
        chmod 0644 "$R_UNITS/$(basename "$unit")"
    done
}

install_desktop_entry() {
    local entry="$SOURCE/admin_gui/resources/sivr-admin.desktop"
    if [[ ! -f "$entry" ]]; then
        say "no $entry in this source tree: the console's menu entry is not installed"
        return
    fi
    install -D -m 0644 "$entry" "$ROOT/usr/share/applications/sivr-admin.desktop"
    local icon="$SOURCE/admin_gui/resources/sivr-admin.svg"
    [[ ! -f "$icon" ]] || install -D -m 0644 "$icon" "$ROOT/usr/share/icons/hicolor/scalable/apps/sivr-admin.svg"
}

enable_units() {
    local units=()
    local name
    for name in $(instances); do
        units+=("$(unit_of "$name")")
        # the instance's TLS/HTTP/2 front, when `sivr init --front` made one (daemons/front.py)
        if [[ -e "$R_ETC/front/$name.conf" ]]; then units+=("sivr-front@$name.service"); fi
    done
    if ((${#units[@]} == 0)); then
        say "no instance of \"$LAYERS\" is configured here: nothing to enable"
        return
    fi
    if ((!SYSTEMCTL)); then
        say "--no-systemctl: enable with: systemctl enable --now ${units[*]}"
        return
    fi
    if [[ -n "$ROOT" ]]; then
        systemctl --root="$ROOT" enable "${units[@]}"
    else
        systemctl daemon-reload
        systemctl enable "${units[@]}"
        say "enabled; start with: systemctl start ${units[*]}"
    fi
}

create_user
install_venv
write_config
set_permissions
warm_render_kernels
install_units
install_desktop_entry
enable_units
if has_layer toplevel && [[ -e "$R_ETC/toplevel.toml" ]]; then
    say "first administrator: runuser -u $SERVICE_USER -- sivr user add --config $ETC/toplevel.toml --username admin --role sysadmin"
fi
if [[ -z "$FROM" && ${#HOSTNAMES[@]} -eq 0 && $FRESH_CONFIG -eq 1 ]]; then
    say "no --hostname: the layers listen on 127.0.0.1 only; see server.host in $ETC/*.toml"
fi
if [[ -e "$R_ETC/tls/ca.key" ]]; then
    say "$ETC/tls/ca.key signs certificates; keep a copy offline and consider removing it from this host"
fi
