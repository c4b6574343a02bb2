# .rpm %postun ($1 = 0 on erase, 1 on upgrade). Data in /var/lib/warbler and the warbler
# user are kept on erase (remove them by hand, or with `install.sh --uninstall --purge`).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
