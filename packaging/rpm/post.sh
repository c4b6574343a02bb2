# .rpm %post ($1 = 1 on install, 2 on upgrade): the warbler system user, the data
# directory, the config readable by the service; the service enabled and (re)started when
# systemd runs. Without systemd (containers) it only prepares the files.
if ! getent passwd warbler >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/warbler --no-create-home \
        --shell /sbin/nologin --comment "Warbler push service" warbler
fi
mkdir -p /var/lib/warbler
chown warbler:warbler /var/lib/warbler
chmod 0750 /var/lib/warbler
chgrp warbler /etc/warbler/warbler.toml
chmod 0640 /etc/warbler/warbler.toml

# First install only: the machine's names and addresses go into the certificate names,
# unless the administrator already set them.
if [ "$1" -eq 1 ] && grep -q '^# hostnames = \[\]$' /etc/warbler/warbler.toml; then
    names=$({
        hostname -f 2>/dev/null || true
        hostname -I 2>/dev/null | tr ' ' '\n' || true
    } | awk '/^[A-Za-z0-9.:-]+$/ && $0 != "localhost" && $0 !~ /^127\./ && $0 != "::1" \
            && $0 !~ /^fe80:/ && !seen[$0]++ { printf "%s\"%s\"", (n++ ? ", " : ""), $0 }')
    if [ -n "$names" ]; then
        sed -i "s|^# hostnames = \[\]\$|hostnames = [$names]|" /etc/warbler/warbler.toml
    fi
fi

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable warbler >/dev/null 2>&1 || true
    if [ "$1" -eq 1 ]; then
        systemctl start warbler || true
        echo "warbler: started; first credentials in /var/lib/warbler/initial-credentials.json"
    else
        # An upgrade: SIGTERM drains (nothing accepted is lost), clients reconnect and resume.
        systemctl try-restart warbler || true
    fi
fi
exit 0
