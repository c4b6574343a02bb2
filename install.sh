#!/bin/sh
# Installs (or upgrades, or removes) Warbler on one Linux machine, offline.
#
#   sh install.sh                 install or upgrade, enable and start the service
#   sh install.sh --help          every option
#
# The binary comes from --binary PATH, else `warbler` next to this script (the release
# tarball), else a release build of the checkout this script sits in. Re-running it
# upgrades in place: the binary and the systemd unit are replaced, the configuration and
# the data directory are kept. docs/install.md (INSTALL.md in the release tarball)
# explains what it does and why.
set -eu

PROG=install.sh
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

BIN_PATH=/usr/local/bin/warbler
CONF_DIR=/etc/warbler
CONF_FILE=$CONF_DIR/warbler.toml
DATA_DIR=/var/lib/warbler
UNIT_FILE=/etc/systemd/system/warbler.service
SERVICE_USER=warbler
READY_TIMEOUT=60

ROOT=
BINARY=
LISTEN=0.0.0.0:8443
HOSTNAMES=
ACTION=install
PURGE=no
SYSTEMD=yes

usage() {
    cat <<EOF
Usage: sh $PROG [OPTIONS]

Installs Warbler as a hardened systemd service, or upgrades it in place:
  $BIN_PATH                the binary
  $CONF_FILE             the configuration (written once, then kept)
  $DATA_DIR                      the data directory (0750, kept on upgrade)
  $UNIT_FILE   the hardened unit
and a system user '$SERVICE_USER'. Then enables and starts the service, waits until it is
ready and prints its URL, where the first credentials are and the CA fingerprint.

Options:
  --binary PATH   install this warbler binary (default: ./warbler next to this script,
                  else a release build of the checkout this script is in)
  --listen ADDR   address written to a new configuration (default $LISTEN)
  --hostnames A,B names for the certificate, written to a new configuration (default:
                  this machine's names and non-loopback addresses; 'none': no extra names)
  --no-systemd    install files only: no unit, no enabling or starting (containers, CI)
  --root DIR      stage everything under DIR (implies --no-systemd; no user is created
                  and files are not given to it)
  --uninstall     stop and remove the service and the binary; keep configuration and data
  --purge         with --uninstall: also remove configuration, data and the user
  -h, --help      this text
EOF
}

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --binary)
            [ $# -ge 2 ] || die "--binary needs a path"
            BINARY=$2
            shift 2
            ;;
        --binary=*) BINARY=${1#*=}; shift ;;
        --listen)
            [ $# -ge 2 ] || die "--listen needs an address"
            LISTEN=$2
            shift 2
            ;;
        --listen=*) LISTEN=${1#*=}; shift ;;
        --hostnames)
            [ $# -ge 2 ] || die "--hostnames needs a comma-separated list"
            HOSTNAMES=$2
            shift 2
            ;;
        --hostnames=*) HOSTNAMES=${1#*=}; shift ;;
        --root)
            [ $# -ge 2 ] || die "--root needs a directory"
            ROOT=$2
            shift 2
            ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --no-systemd) SYSTEMD=no; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=yes; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

if [ "$PURGE" = yes ] && [ "$ACTION" != uninstall ]; then
    die "--purge goes with --uninstall"
fi
if [ -n "$ROOT" ]; then
    mkdir -p -- "$ROOT"
    ROOT=$(CDPATH='' cd -- "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=
    SYSTEMD=no
fi
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or stage with --root DIR)"
fi
if [ "$SYSTEMD" = yes ] && ! [ -d /run/systemd/system ]; then
    die "systemd is not running here; use --no-systemd to install the files only"
fi

# --- helpers ------------------------------------------------------------------------------

# The machine's names and non-loopback addresses, one per line, for the certificate.
machine_names() {
    {
        hostname -f 2>/dev/null || true
        hostname 2>/dev/null || true
        hostname -I 2>/dev/null | tr ' ' '\n' || true
        if command -v ip >/dev/null 2>&1; then
            ip -o addr show 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4 }' || true
        fi
    } | awk '
        /^[A-Za-z0-9.:-]+$/ && $0 != "localhost" && $0 != "localhost.localdomain" \
            && $0 !~ /^127\./ && $0 != "::1" && $0 !~ /^fe80:/ && !seen[$0]++ { print }'
}

# A TOML array of strings from lines on stdin.
toml_array() {
    awk 'BEGIN { printf "[" } { printf "%s\"%s\"", (NR > 1 ? ", " : ""), $0 } END { printf "]" }'
}

# The names for a new configuration: --hostnames, else the machine's own.
certificate_names() {
    if [ "$HOSTNAMES" = none ]; then
        return 0
    elif [ -n "$HOSTNAMES" ]; then
        printf '%s\n' "$HOSTNAMES" | tr ',' '\n' | awk '/^[A-Za-z0-9.:*-]+$/'
    else
        machine_names
    fi
}

# The configuration for a new install: the commented default with listen, hostnames and
# data_dir set.
new_config() {
    hostnames=$(certificate_names | toml_array)
    printf '# Written by %s: listen, hostnames and data_dir are set; every other key is\n' "$PROG"
    printf '# commented out at its default.\n\n'
    "$1" config print-default | sed \
        -e "s|^# listen = .*|listen = \"$LISTEN\"|" \
        -e "s|^# hostnames = .*|hostnames = $hostnames|" \
        -e "s|^# data_dir = .*|data_dir = \"$DATA_DIR\"|"
}

# Value of a top-level `key = "value"` line of the configuration.
config_value() {
    sed -n "s/^$1 = \"\\(.*\\)\"\$/\\1/p" "$ROOT$CONF_FILE" | head -n 1
}

# SHA-256 fingerprint (AA:BB:...) of the first certificate of a PEM file.
pem_fingerprint() {
    sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$1" |
        sed '/-----/d' | base64 -d | sha256sum |
        awk '{ print toupper($1) }' | sed 's/../&:/g; s/:$//'
}

find_binary() {
    if [ -n "$BINARY" ]; then
        [ -f "$BINARY" ] || die "--binary $BINARY: no such file"
        printf '%s\n' "$BINARY"
    elif [ -f "$SCRIPT_DIR/warbler" ]; then
        printf '%s\n' "$SCRIPT_DIR/warbler"
    elif [ -f "$SCRIPT_DIR/Cargo.toml" ] && [ -d "$SCRIPT_DIR/src" ]; then
        command -v cargo >/dev/null 2>&1 ||
            die "no binary next to this script and no cargo to build one; use --binary PATH"
        step "building the release binary in $SCRIPT_DIR" >&2
        (cd "$SCRIPT_DIR" && cargo build --release --locked >&2)
        printf '%s\n' "$SCRIPT_DIR/target/release/warbler"
    else
        die "no warbler binary next to this script; use --binary PATH"
    fi
}

service_active() {
    [ "$SYSTEMD" = yes ] && systemctl is-active --quiet warbler 2>/dev/null
}

# --- uninstall ----------------------------------------------------------------------------

uninstall() {
    if [ "$SYSTEMD" = yes ]; then
        step "stopping and disabling the service"
        systemctl disable --now warbler 2>/dev/null || true
    fi
    step "removing the binary and the unit"
    rm -f -- "$ROOT$BIN_PATH" "$ROOT$UNIT_FILE"
    [ "$SYSTEMD" = no ] || systemctl daemon-reload
    if [ "$PURGE" = yes ]; then
        step "purging configuration, data and the user"
        rm -rf -- "$ROOT$CONF_DIR" "$ROOT$DATA_DIR"
        if [ -z "$ROOT" ] && id "$SERVICE_USER" >/dev/null 2>&1; then
            userdel "$SERVICE_USER" 2>/dev/null || true
        fi
        say "Warbler is removed, with its configuration and data."
    else
        say "Warbler is removed. Kept: $ROOT$CONF_FILE and $ROOT$DATA_DIR"
        say "(remove them too with: sh $PROG --uninstall --purge)"
    fi
}

# --- install ------------------------------------------------------------------------------

install_files() {
    src=$(find_binary)
    "$src" --version >/dev/null 2>&1 || die "$src does not run on this machine"
    version=$("$src" --version)
    # An upgrade: the kept configuration must suit the new binary before anything changes.
    if [ -f "$ROOT$CONF_FILE" ] && ! "$src" config check "$ROOT$CONF_FILE" >/dev/null; then
        die "$ROOT$CONF_FILE is not valid for $version (see above); nothing was changed"
    fi

    if [ -z "$ROOT" ]; then
        if ! id "$SERVICE_USER" >/dev/null 2>&1; then
            step "creating the system user $SERVICE_USER"
            nologin=$(command -v nologin || echo /sbin/nologin)
            useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
                --shell "$nologin" --comment "Warbler push service" "$SERVICE_USER"
        fi
        owner=$SERVICE_USER
    else
        owner=
    fi

    step "installing $version to $ROOT$BIN_PATH"
    mkdir -p -- "$ROOT${BIN_PATH%/*}"
    cp -- "$src" "$ROOT$BIN_PATH.new"
    chmod 0755 "$ROOT$BIN_PATH.new"
    mv -f -- "$ROOT$BIN_PATH.new" "$ROOT$BIN_PATH"

    mkdir -p -- "$ROOT$CONF_DIR" "$ROOT$DATA_DIR"
    chmod 0755 "$ROOT$CONF_DIR"
    chmod 0750 "$ROOT$DATA_DIR"
    [ -z "$owner" ] || chown "$owner:$owner" "$ROOT$DATA_DIR"

    if [ -f "$ROOT$CONF_FILE" ]; then
        step "keeping the configuration $ROOT$CONF_FILE"
    else
        step "writing the configuration $ROOT$CONF_FILE"
        new_config "$ROOT$BIN_PATH" >"$ROOT$CONF_FILE.new"
        chmod 0640 "$ROOT$CONF_FILE.new"
        [ -z "$owner" ] || chown "root:$owner" "$ROOT$CONF_FILE.new"
        mv -f -- "$ROOT$CONF_FILE.new" "$ROOT$CONF_FILE"
    fi
    "$ROOT$BIN_PATH" config check "$ROOT$CONF_FILE" >/dev/null ||
        die "$ROOT$CONF_FILE is not valid (see above); fix it and run $PROG again"

    if [ "$SYSTEMD" = yes ]; then
        unit_src=$SCRIPT_DIR/warbler.service
        [ -f "$unit_src" ] || unit_src=$SCRIPT_DIR/packaging/systemd/warbler.service
        [ -f "$unit_src" ] || die "warbler.service not found next to this script"
        step "installing the systemd unit $UNIT_FILE"
        sed "s|^ExecStart=/usr/bin/warbler |ExecStart=$BIN_PATH |" "$unit_src" >"$UNIT_FILE.new"
        chmod 0644 "$UNIT_FILE.new"
        mv -f -- "$UNIT_FILE.new" "$UNIT_FILE"
        systemctl daemon-reload
        systemctl enable warbler >/dev/null 2>&1
        if service_active; then
            step "restarting the service (clients reconnect and resume)"
            systemctl restart warbler
        else
            step "starting the service"
            systemctl start warbler
        fi
    fi
}

wait_ready() {
    listen=$(config_value listen)
    [ -n "$listen" ] || listen=127.0.0.1:8443
    port=${listen##*:}
    case $listen in
        0.0.0.0:*) local_url=https://127.0.0.1:$port ;;
        \[::\]:*) local_url="https://[::1]:$port" ;;
        *) local_url=https://$listen ;;
    esac
    ca=$DATA_DIR/tls/ca.crt
    step "waiting for $local_url/readyz"
    waited=0
    while :; do
        if [ -f "$ca" ]; then
            if command -v curl >/dev/null 2>&1; then
                curl -fsS --max-time 2 --cacert "$ca" "$local_url/readyz" >/dev/null 2>&1 && break
            else
                "$BIN_PATH" health --url "$local_url" --ca "$ca" >/dev/null 2>&1 && break
            fi
        fi
        if ! systemctl is-active --quiet warbler && [ "$waited" -ge 5 ]; then
            journalctl -u warbler -n 30 --no-pager >&2 || true
            die "the service is not running (journalctl -u warbler)"
        fi
        [ "$waited" -lt "$READY_TIMEOUT" ] ||
            die "not ready after ${READY_TIMEOUT}s (journalctl -u warbler)"
        sleep 1
        waited=$((waited + 1))
    done
}

report() {
    listen=$(config_value listen)
    port=${listen##*:}
    [ -n "$port" ] || port=8443
    # The host in the URL: the listen address when it is a specific one, else a full
    # name, else an IPv4 address, else whatever name there is.
    case $listen in
        0.0.0.0:* | \[::\]:*)
            names=$(certificate_names)
            name=$(printf '%s\n' "$names" | grep '[A-Za-z].*\.' | grep -v ':' | head -n 1)
            [ -n "$name" ] || name=$(printf '%s\n' "$names" | grep '^[0-9.]*$' | head -n 1)
            [ -n "$name" ] || name=$(printf '%s\n' "$names" | head -n 1)
            ;;
        *) name=${listen%:*} ;;
    esac
    case $name in
        '') name=localhost ;;
        \[*) ;;
        *:*) name="[$name]" ;;
    esac
    ca=$DATA_DIR/tls/ca.crt
    say ""
    say "Warbler is running."
    say "  URL              https://$name:$port"
    if [ -f "$DATA_DIR/initial-credentials.json" ]; then
        say "  credentials      $DATA_DIR/initial-credentials.json (mode 0600; move it somewhere safe)"
    else
        say "  credentials      handed out on the first start (initial-credentials.json, since moved)"
    fi
    say "  CA certificate   $ca"
    say "  CA SHA-256       $(pem_fingerprint "$ca")"
    say "  configuration    $CONF_FILE"
    say "  logs             journalctl -u warbler"
    say ""
    say "Test it:"
    say "  curl --cacert $ca https://$name:$port/readyz"
}

if [ "$ACTION" = uninstall ]; then
    uninstall
    exit 0
fi

install_files
if [ "$SYSTEMD" = yes ]; then
    wait_ready
    report
else
    say ""
    say "Files installed under ${ROOT:-/} (no service was started). Run it with:"
    say "  runuser -u $SERVICE_USER -- $BIN_PATH serve --config $CONF_FILE"
fi
