#!/usr/bin/env bash
# Packaging tests (run by tests/run-all.sh): builds dist/ with packaging/build.sh, then
#  1. shellcheck on install.sh, the packaging scripts and this file;
#  2. the Dockerfile's shape (docker itself does not run here);
#  3. systemd-analyze verify on the unit, where available;
#  4. the release tarball: `install.sh --root DIR --no-systemd` lays out the expected tree
#     and modes; the installed binary serves a push to a real WebSocket client (timed from
#     running install.sh to the push received); an upgrade in place (stop, install.sh
#     again, start) keeps config and data byte for byte, and a client connected across
#     it reconnects and gets every unacked message in order;
#     --uninstall keeps them, --purge removes them;
#  5. the .deb: dpkg -i, the installed binary run as the package's user with the installed
#     config delivers a push; dpkg -r keeps only the conffile (and data); dpkg --purge;
#  6. the .rpm: file list, config files and scripts (rpm -qlp, rpm -qp --scripts).
# Steps that need root (dpkg -i) or a missing tool are skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== packaging: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
skip() { printf 'SKIP: %s\n' "$*"; }
is_root() { [ "$(id -u)" -eq 0 ]; }

WORK=$(mktemp -d)
SERVER_PID=
DEB_INSTALLED=no
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    if [ "$DEB_INSTALLED" = yes ]; then dpkg --purge warbler >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Tools: shellcheck and rpm from the distribution when missing (and allowed).
missing=()
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v rpm >/dev/null || missing+=(rpm)
if [ ${#missing[@]} -gt 0 ] && is_root && command -v apt-get >/dev/null; then
    step "apt-get install ${missing[*]}"
    apt-get install -y -qq "${missing[@]}" >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
        skip "could not install ${missing[*]}"
fi

# mode_of PATH -> octal mode (e.g. 750)
mode_of() { stat -c %a "$1"; }
expect_mode() {
    [ -e "$1" ] || fail "$1 is missing"
    [ "$(mode_of "$1")" = "$2" ] || fail "$1 has mode $(mode_of "$1"), expected $2"
}

# start_server LOG CMD... : runs CMD in the background, waits for "listening on", sets
# SERVER_PID and URL.
start_server() {
    local log=$1
    shift
    "$@" >"$log" 2>"$log.err" &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        URL=$(sed -n 's/^listening on //p' "$log" | head -n 1)
        [ -z "$URL" ] || return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log.err" >&2; fail "server exited: $*"; }
        sleep 0.1
    done
    fail "server did not start within 30 s: $*"
}
stop_server() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || fail "server did not exit 0 on SIGTERM"
    SERVER_PID=
}
# A push through the running server to a WebSocket client (tests/it/packaged.rs).
push_test() {
    WARBLER_TEST_URL=$URL WARBLER_TEST_CA=$1 WARBLER_TEST_CREDENTIALS=$2 \
        cargo test --locked --quiet --test it -- --ignored --exact \
        packaged::packaged_server_delivers_a_push_to_a_websocket_client >"$WORK/push.log" 2>&1 ||
        { cat "$WORK/push.log" >&2; fail "no push delivered through $URL"; }
    grep -q '1 passed' "$WORK/push.log" || { cat "$WORK/push.log" >&2; fail "push test did not run"; }
}

step "shellcheck"
if command -v shellcheck >/dev/null; then
    shellcheck install.sh packaging/build.sh packaging/deb/postinst packaging/deb/prerm \
        packaging/deb/postrm tests/packaging.sh
    shellcheck --shell=sh packaging/rpm/*.sh
    echo "shellcheck: clean"
else
    skip "shellcheck is not installed"
fi

step "Dockerfile shape"
df=packaging/docker/Dockerfile
grep -q '^FROM scratch$' "$df" || fail "$df: final stage is not FROM scratch"
grep -q '^USER 10001:10001$' "$df" || fail "$df: no non-root USER"
grep -q '^VOLUME \["/var/lib/warbler"\]$' "$df" || fail "$df: no data volume"
grep -q '^HEALTHCHECK .*' "$df" || fail "$df: no HEALTHCHECK"
grep -q 'target-feature=+crt-static' "$df" || fail "$df: binary is not static"
echo "Dockerfile: multi-stage, scratch, non-root, volume, health check"

step "build dist/ (packaging/build.sh)"
cargo test --locked --test it --no-run --quiet # the push tests, built before the timing
sh packaging/build.sh
BIN=target/x86_64-unknown-linux-gnu/release/warbler
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
TARBALL=dist/warbler-$VERSION-x86_64-linux.tar.gz
DEB=$(ls dist/warbler_"$VERSION"-*_amd64.deb)
RPM=$(ls dist/warbler-"$VERSION"-*.x86_64.rpm)
BIN_SIZE=$(wc -c <"$BIN")

step "systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
    sed "s|^ExecStart=/usr/bin/warbler |ExecStart=$PWD/$BIN |" packaging/systemd/warbler.service \
        >"$WORK/warbler.service"
    systemd-analyze verify "$WORK/warbler.service"
    echo "systemd-analyze verify: ok"
else
    skip "systemd-analyze is not available"
fi

step "release tarball: install.sh --root --no-systemd, first push, re-run, uninstall"
mkdir -p "$WORK/unpacked"
tar -C "$WORK/unpacked" -xzf "$TARBALL"
T=$WORK/unpacked/warbler-$VERSION-x86_64-linux
for f in warbler install.sh warbler.toml warbler.service README.md NOTICE INSTALL.md; do
    [ -f "$T/$f" ] || fail "tarball lacks $f"
done
R=$WORK/root
started=$(date +%s.%N)
sh "$T/install.sh" --root "$R" --no-systemd --hostnames push.test.internal,10.9.8.7 \
    >"$WORK/install1.log"
start_server "$WORK/server.log" "$R/usr/local/bin/warbler" serve \
    --config "$R/etc/warbler/warbler.toml" --data "$R/var/lib/warbler" --listen 127.0.0.1:0
push_test "$R/var/lib/warbler/tls/ca.crt" "$R/var/lib/warbler/initial-credentials.json"
finished=$(date +%s.%N)
INSTALL_TO_PUSH=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.1f", b - a }')
echo "install.sh to first push delivered: ${INSTALL_TO_PUSH} s"

expect_mode "$R/usr/local/bin/warbler" 755
expect_mode "$R/etc/warbler" 755
expect_mode "$R/etc/warbler/warbler.toml" 640
expect_mode "$R/var/lib/warbler" 750
[ ! -e "$R/etc/systemd" ] || fail "--no-systemd installed a unit"
conf=$R/etc/warbler/warbler.toml
grep -qx 'listen = "0.0.0.0:8443"' "$conf" || fail "config: listen not set"
grep -qx 'hostnames = \["push.test.internal", "10.9.8.7"\]' "$conf" || fail "config: hostnames"
grep -qx 'data_dir = "/var/lib/warbler"' "$conf" || fail "config: data_dir not set"
grep -q '^# max_connections = 19000$' "$conf" || fail "config: not the commented default"
"$R/usr/local/bin/warbler" config check "$conf" >/dev/null
if command -v curl >/dev/null; then
    port=${URL##*:}
    curl -fsS --cacert "$R/var/lib/warbler/tls/ca.crt" \
        --resolve "push.test.internal:$port:127.0.0.1" \
        "https://push.test.internal:$port/readyz" >/dev/null ||
        fail "the certificate does not name push.test.internal"
    echo "certificate names the configured hostname"
fi

snapshot() {
    (cd "$R" && find etc var usr -printf '%p %m %s\n' | sort &&
        sha256sum etc/warbler/warbler.toml var/lib/warbler/initial-credentials.json \
            var/lib/warbler/tls/ca.crt var/lib/warbler/warbler.redb)
}
# Upgrade in place while a client is connected and owed unacked messages: stop (SIGTERM
# drains), re-run install.sh, start the new binary on the same port; the client reconnects
# and gets every message again, in order (tests/it/packaged.rs).
port=${URL##*:}
WARBLER_TEST_URL=$URL WARBLER_TEST_CA=$R/var/lib/warbler/tls/ca.crt \
    WARBLER_TEST_CREDENTIALS=$R/var/lib/warbler/initial-credentials.json \
    WARBLER_TEST_READY=$WORK/ready \
    cargo test --locked --quiet --test it -- --ignored --exact \
    packaged::packaged_upgrade_loses_nothing_and_the_client_resumes >"$WORK/upgrade.log" 2>&1 &
client_pid=$!
for _ in $(seq 1 300); do
    [ ! -e "$WORK/ready" ] || break
    kill -0 "$client_pid" 2>/dev/null || { cat "$WORK/upgrade.log" >&2; fail "upgrade client"; }
    sleep 0.1
done
[ -e "$WORK/ready" ] || fail "the upgrade client did not get ready"
stop_server
snapshot >"$WORK/before"
sh "$T/install.sh" --root "$R" --no-systemd --hostnames other.example >"$WORK/install2.log"
grep -q 'keeping the configuration' "$WORK/install2.log" || fail "re-run did not keep config"
snapshot >"$WORK/after"
diff -u "$WORK/before" "$WORK/after" || fail "a second install.sh run changed kept files"
echo "second run: configuration and data unchanged"
start_server "$WORK/server2.log" "$R/usr/local/bin/warbler" serve \
    --config "$R/etc/warbler/warbler.toml" --data "$R/var/lib/warbler" --listen "127.0.0.1:$port"
wait "$client_pid" || { cat "$WORK/upgrade.log" >&2; fail "messages lost across the upgrade"; }
grep -q '1 passed' "$WORK/upgrade.log" || { cat "$WORK/upgrade.log" >&2; fail "no upgrade test ran"; }
stop_server
echo "upgrade in place: the connected client reconnected and got every unacked message"

sh "$T/install.sh" --root "$R" --no-systemd --uninstall >/dev/null
[ ! -e "$R/usr/local/bin/warbler" ] || fail "--uninstall left the binary"
{ [ -f "$conf" ] && [ -f "$R/var/lib/warbler/warbler.redb" ]; } || fail "--uninstall lost data"
sh "$T/install.sh" --root "$R" --no-systemd --uninstall --purge >/dev/null
{ [ ! -e "$R/etc/warbler" ] && [ ! -e "$R/var/lib/warbler" ]; } || fail "--purge left files"
echo "--uninstall keeps config and data; --purge removes them"

step ".deb: dpkg -i, push through the installed binary as user warbler, dpkg -r, purge"
if ! is_root || ! command -v dpkg >/dev/null; then
    skip "needs root and dpkg"
elif dpkg -s warbler >/dev/null 2>&1 || [ -e /etc/warbler ] || [ -e /var/lib/warbler ]; then
    skip "warbler is already installed on this machine; not touching it"
else
    dpkg -i "$DEB" >"$WORK/dpkg-i.log" 2>&1 || { cat "$WORK/dpkg-i.log" >&2; fail "dpkg -i"; }
    DEB_INSTALLED=yes
    files=$(dpkg -L warbler)
    for f in /usr/bin/warbler /etc/warbler/warbler.toml /usr/lib/systemd/system/warbler.service \
        /usr/share/doc/warbler/install.md; do
        grep -qx "$f" <<<"$files" || fail ".deb does not install $f"
    done
    dpkg-query -W -f='${Conffiles}\n' warbler | grep -q '^ /etc/warbler/warbler.toml ' ||
        fail "/etc/warbler/warbler.toml is not a conffile"
    id warbler >/dev/null || fail "postinst did not create the warbler user"
    expect_mode /var/lib/warbler 750
    expect_mode /etc/warbler/warbler.toml 640
    [ "$(stat -c %U:%G /var/lib/warbler)" = warbler:warbler ] || fail "data dir owner"
    [ "$(stat -c %G /etc/warbler/warbler.toml)" = warbler ] || fail "config group"
    grep -qx 'data_dir = "/var/lib/warbler"' /etc/warbler/warbler.toml || fail "deb config"
    if hostname -I 2>/dev/null | grep -q '[0-9a-f]'; then
        grep -q '^hostnames = \["' /etc/warbler/warbler.toml ||
            fail "postinst did not fill hostnames with this machine's addresses"
    fi
    ldd /usr/bin/warbler 2>&1 | grep -q -e 'not a dynamic' -e 'statically linked' ||
        fail "the packaged binary is dynamically linked"

    # setpriv execs the server itself (runuser would stay as its parent and eat SIGTERM's status).
    start_server "$WORK/deb-server.log" setpriv --reuid=warbler --regid=warbler --init-groups \
        -- /usr/bin/warbler serve \
        --config /etc/warbler/warbler.toml --listen 127.0.0.1:0
    push_test /var/lib/warbler/tls/ca.crt /var/lib/warbler/initial-credentials.json
    stop_server
    echo "installed .deb delivered a push to a WebSocket client (as user warbler)"

    dpkg -r warbler >/dev/null 2>&1 || fail "dpkg -r"
    [ ! -e /usr/bin/warbler ] || fail "dpkg -r left /usr/bin/warbler"
    [ ! -e /usr/lib/systemd/system/warbler.service ] || fail "dpkg -r left the unit"
    [ -f /etc/warbler/warbler.toml ] || fail "dpkg -r removed the conffile"
    [ -f /var/lib/warbler/warbler.redb ] || fail "dpkg -r removed the data"
    dpkg -s warbler 2>/dev/null | grep -q '^Status: deinstall ok config-files$' ||
        fail "after dpkg -r the package should be in config-files state"
    dpkg --purge warbler >/dev/null 2>&1 || fail "dpkg --purge"
    DEB_INSTALLED=no
    { [ ! -e /etc/warbler ] && [ ! -e /var/lib/warbler ]; } || fail "purge left files"
    echo "dpkg -r keeps the conffile and data; --purge removes them"
fi

step ".rpm: file list, config files, scripts"
if command -v rpm >/dev/null; then
    list=$(rpm -qlp "$RPM" 2>/dev/null)
    for f in /usr/bin/warbler /etc/warbler/warbler.toml /usr/lib/systemd/system/warbler.service; do
        grep -qx "$f" <<<"$list" || fail ".rpm does not contain $f"
    done
    rpm -qp --configfiles "$RPM" 2>/dev/null | grep -qx /etc/warbler/warbler.toml ||
        fail ".rpm: the config is not a config file"
    scripts=$(rpm -qp --scripts "$RPM" 2>/dev/null)
    for s in 'postinstall scriptlet' 'preuninstall scriptlet' 'useradd --system' \
        'systemctl enable warbler' 'systemctl disable --now warbler'; do
        grep -q -- "$s" <<<"$scripts" || fail ".rpm scripts lack: $s"
    done
    echo ".rpm: files, config file and scripts as expected"
else
    skip "rpm is not installed"
fi

step "figures"
echo "static binary: $BIN_SIZE bytes ($(awk -v b="$BIN_SIZE" 'BEGIN { printf "%.1f", b / 1048576 }') MiB)"
echo "install.sh (tarball, --root --no-systemd) to first push delivered: ${INSTALL_TO_PUSH} s"
ls -l dist/
