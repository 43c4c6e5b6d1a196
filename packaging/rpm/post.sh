# %post: $1 is 1 on install, 2 or more on upgrade (as the RPM systemd macros).
if command -v systemd-sysusers >/dev/null 2>&1; then systemd-sysusers ferricorn.conf || :; fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then systemd-tmpfiles --create ferricorn.conf || :; fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 2 ]; then
        for unit in $(systemctl list-units --type=service --state=running --plain --no-legend 'ferricorn@*.service' | awk '{print $1}'); do
            systemctl reload "$unit" || :
        done
    fi
fi
