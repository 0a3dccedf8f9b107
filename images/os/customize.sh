#!/usr/bin/env bash
# mmdebstrap customize hook: turns the installed Debian 12 tree ($1) into a cloud image. Runs on the host
# as root with ROOT_UUID set (the root filesystem's UUID that fstab and the boot entry name).
set -euo pipefail
r=${1:?usage: customize.sh ROOTFS}
: "${ROOT_UUID:?}"

echo debian >"$r/etc/hostname"
printf 'UUID=%s / ext4 rw,discard,errors=remount-ro 0 1\n' "$ROOT_UUID" >"$r/etc/fstab"

# cloud-init: only the NoCloud datasource (KubeVirt's cloudInitNoCloud `cidata` disk), then None, so boot
# does not probe cloud metadata services that are not there.
cat >"$r/etc/cloud/cloud.cfg.d/90_kvirt.cfg" <<'CFG'
datasource_list: [NoCloud, None]
CFG

# Networking: cloud-init writes the DHCP stanza for the first NIC into interfaces.d (its eni renderer).
cat >"$r/etc/network/interfaces" <<'NET'
# Loopback; cloud-init writes the rest into interfaces.d.
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
NET
mkdir -p "$r/etc/network/interfaces.d"

# Each VM gets its own identity on first boot: systemd makes the machine-id, cloud-init the SSH host keys.
: >"$r/etc/machine-id"
rm -f "$r/var/lib/dbus/machine-id" "$r"/etc/ssh/ssh_host_*

# A persistent journal, so the previous boot's shutdown can be read (journalctl -b -1).
mkdir -p "$r/var/log/journal"

# Periodic maintenance that only costs boot time in a VM image.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
	systemctl --root="$r" mask "$unit" >/dev/null 2>&1 || true
done

# No package lists or caches in the image.
rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb
