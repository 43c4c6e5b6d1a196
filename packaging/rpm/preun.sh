# %preun: $1 is 0 on erase (stop the instances), 1 or more on upgrade (keep them).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    units=$(systemctl list-units --all --plain --no-legend 'ferricorn@*.service' 'ferricorn@*.socket' | awk '{print $1}')
    [ -n "$units" ] && systemctl stop $units || :
fi
