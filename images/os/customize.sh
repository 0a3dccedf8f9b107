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

# systemd runs its generators at boot under one fixed 90 s deadline and kills them all when it passes.
# cloud-init's generator (a shell script running ds-identify, dozens of processes) overruns it on hosts
# where the guest kernel is interpreted (PVM), which disabled cloud-init and could cost the serial getty.
# So the image enables both statically and masks that generator: cloud-init runs on every boot (its
# datasource list is NoCloud, None), the serial console always gets a login prompt.
ln -sf /dev/null "$r/etc/systemd/system-generators/cloud-init-generator" 2>/dev/null ||
	{ mkdir -p "$r/etc/systemd/system-generators" && ln -sf /dev/null "$r/etc/systemd/system-generators/cloud-init-generator"; }
mkdir -p "$r/etc/systemd/system/multi-user.target.wants" "$r/etc/systemd/system/getty.target.wants"
ln -sf /lib/systemd/system/cloud-init.target "$r/etc/systemd/system/multi-user.target.wants/cloud-init.target"
ln -sf /lib/systemd/system/serial-getty@.service "$r/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
printf 'policy: enabled\n' >"$r/etc/cloud/ds-identify.cfg"
# The serial getty waits for udev to announce ttyS0, under systemd's 90 s device timeout, which systemd
# 252 does not let the kernel command line lengthen (systemd.default_device_timeout_sec= came in 254):
# on PVM udevd alone needs minutes to start, and the getty failed with "Timed out waiting for device".
mkdir -p "$r/etc/systemd/system/dev-ttyS0.device.d"
printf '[Unit]\nJobRunningTimeoutSec=30min\n' >"$r/etc/systemd/system/dev-ttyS0.device.d/kvirt-slow-hosts.conf"

# ifupdown's networking.service sets its own 5 min start timeout, which the kernel command line's
# default cannot lengthen: DHCP through dhclient-script (dozens of processes) overruns it on PVM hosts.
mkdir -p "$r/etc/systemd/system/networking.service.d"
printf '[Service]\nTimeoutStartSec=30min\n' >"$r/etc/systemd/system/networking.service.d/kvirt-slow-hosts.conf"

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
