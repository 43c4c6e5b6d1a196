# %postun: tell systemd the units changed or went away.
if [ -d /run/systemd/system ]; then systemctl daemon-reload || :; fi
