package spec

import (
	"cmp"
	"fmt"
	"net"
	"strings"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/network"
	"github.com/kvirt/kvirt/launcher/volumes"
	corev1 "k8s.io/api/core/v1"
)

func (t *translator) disks(m *Machine) {
	spec := &t.vmi.Spec
	volIdx := map[string]int{}
	for i, v := range spec.Volumes {
		volIdx[v.Name] = i
	}
	disksPath := t.root.Child("domain", "devices", "disks")
	var bootOrder uint // the lowest bootOrder seen (API validation makes them > 0 and unique)
	for i, d := range spec.Domain.Devices.Disks {
		dp := disksPath.Index(i)
		disk := Disk{Name: d.Name, Serial: d.Serial}
		switch {
		case d.CDRom != nil:
			t.unsupported(dp.Child("cdrom"), fmt.Sprintf("cdrom (bus %s) is not supported: kvirt's VMM has only virtio-blk; use `disk: {bus: virtio}` (with readonly: true)", d.CDRom.Bus))
		case d.Disk != nil:
			if b := d.Disk.Bus; b != "" && b != v1.DiskBusVirtio {
				t.unsupported(dp.Child("disk", "bus"), fmt.Sprintf("bus %s is not supported: kvirt's VMM has only virtio-blk; use bus: virtio", b))
			}
			disk.ReadOnly = d.Disk.ReadOnly
		}
		if len(d.Serial) > MaxSerialLength {
			t.fail(dp.Child("serial"), d.Serial, fmt.Sprintf("virtio-blk serials hold at most %d bytes", MaxSerialLength))
		}
		if d.BootOrder != nil && (bootOrder == 0 || *d.BootOrder < bootOrder) {
			bootOrder, m.BootDisk = *d.BootOrder, len(m.Disks)
		}
		vi, ok := volIdx[d.Name]
		if !ok {
			continue // api validation reports it
		}
		v := spec.Volumes[vi]
		vp := t.root.Child("volumes").Index(vi)
		disk.VolumeField = vp.String()
		switch {
		case v.ContainerDisk != nil:
			c := v.ContainerDisk
			// imagePullSecret: in a cluster the kubelet pulls the image with it (launcher/containerdisk); a
			// launcher that has to pull the image itself refuses it (volumes.ContainerDiskOptions.PullSecret).
			disk.Kind, disk.Image, disk.ImagePath, disk.ImagePullSecret = ContainerDisk, c.Image, c.Path, c.ImagePullSecret
		case v.CloudInitNoCloud != nil:
			c := v.CloudInitNoCloud
			cp := vp.Child("cloudInitNoCloud")
			if c.UserDataSecretRef != nil {
				t.unsupported(cp.Child("secretRef"), "not supported yet: the launcher has no API credentials; put the data in userData or userDataBase64")
			}
			if c.NetworkDataSecretRef != nil {
				t.unsupported(cp.Child("networkDataSecretRef"), "not supported yet: put the data in networkData or networkDataBase64")
			}
			disk.Kind, disk.ReadOnly = CloudInitNoCloud, true
			disk.NoCloud = &volumes.NoCloud{
				UserData: c.UserData, UserDataBase64: c.UserDataBase64,
				NetworkData: c.NetworkData, NetworkDataBase64: c.NetworkDataBase64,
				InstanceID: string(t.vmi.UID), Hostname: m.Hostname,
			}
		case v.EmptyDisk != nil:
			c := v.EmptyDisk.Capacity.DeepCopy()
			disk.Kind, disk.Capacity = EmptyDisk, &c
			if c.Sign() <= 0 {
				t.fail(vp.Child("emptyDisk", "capacity"), c.String(), "must be positive")
			}
		case v.PersistentVolumeClaim != nil:
			disk.Kind, disk.ClaimName = PVC, v.PersistentVolumeClaim.ClaimName
			disk.ReadOnly = disk.ReadOnly || v.PersistentVolumeClaim.ReadOnly
			disk.Claim = claimInfo(t.vmi.Status.VolumeStatus, v.Name)
		case v.HostDisk != nil:
			h := v.HostDisk
			disk.Kind, disk.HostPath, disk.HostDiskType = HostDisk, h.Path, volumes.HostDiskType(h.Type)
			if !h.Capacity.IsZero() {
				c := h.Capacity.DeepCopy()
				disk.Capacity = &c
			}
			if h.Shared != nil && *h.Shared {
				t.warn(vp.Child("hostDisk", "shared"), "recorded only: kvirt does not migrate VMs")
			}
		default:
			t.unsupported(vp, fmt.Sprintf("volume %q has no source kvirt supports (containerDisk, cloudInitNoCloud, emptyDisk, persistentVolumeClaim, hostDisk)", v.Name))
		}
		// cache and io (volumes/persistent.go): the mode of a persistent disk; an ephemeral disk lives in
		// the pod's scratch space and is always written through the host page cache.
		if d.Cache != "" {
			if disk.Kind == PVC || disk.Kind == HostDisk {
				disk.Cache = volumes.Cache(d.Cache)
			} else {
				t.warn(dp.Child("cache"), fmt.Sprintf("ignored for a %s volume: kvirt applies cache modes to persistentVolumeClaim and hostDisk volumes", disk.Kind))
			}
		}
		if d.IO == v1.IONative {
			t.warn(dp.Child("io"), "native is served like threads: kvirt's virtio-blk always uses its pool of I/O goroutines")
		}
		m.Disks = append(m.Disks, disk)
	}
}

func (t *translator) interfaces(m *Machine) {
	spec := &t.vmi.Spec
	nets := map[string]int{}
	for i, n := range spec.Networks {
		nets[n.Name] = i
	}
	ip := t.root.Child("domain", "devices", "interfaces")
	for i, in := range spec.Domain.Devices.Interfaces {
		p := ip.Index(i)
		iface := Interface{Name: in.Name}
		switch {
		case in.Masquerade != nil && in.Bridge != nil:
			t.fail(p, in.Name, "set only one of bridge and masquerade")
		case in.Masquerade != nil:
			iface.Binding = network.Masquerade
		case in.Bridge != nil:
			iface.Binding = network.Bridge
		default:
			t.unsupported(p, "no binding kvirt supports: set bridge: {} or masquerade: {}")
		}
		if in.Model != "" && in.Model != "virtio" {
			t.unsupported(p.Child("model"), fmt.Sprintf("model %q is not supported: kvirt's VMM has only virtio-net", in.Model))
		}
		if in.MacAddress != "" {
			mac, err := net.ParseMAC(in.MacAddress)
			if err != nil || len(mac) != 6 {
				t.fail(p.Child("macAddress"), in.MacAddress, "not a 48-bit MAC address")
			} else if mac[0]&1 != 0 {
				t.fail(p.Child("macAddress"), in.MacAddress, "a multicast MAC cannot be a NIC address")
			} else {
				iface.MAC = mac
			}
		}
		if len(in.Ports) > 0 && iface.Binding == network.Bridge {
			t.unsupported(p.Child("ports"), "ports are only honoured by the masquerade binding (bridge passes every port)")
		}
		for j, port := range in.Ports {
			proto := strings.ToUpper(cmp.Or(port.Protocol, "TCP"))
			if proto != "TCP" && proto != "UDP" {
				t.unsupported(p.Child("ports").Index(j).Child("protocol"), fmt.Sprintf("%q: only TCP and UDP are forwarded", port.Protocol))
			}
			iface.Ports = append(iface.Ports, network.Port{Name: port.Name, Protocol: proto, Port: port.Port})
		}
		ni, ok := nets[in.Name]
		if !ok {
			continue // api validation reports it
		}
		n := spec.Networks[ni]
		np := t.root.Child("networks").Index(ni)
		if n.Pod == nil {
			t.unsupported(np, "only the pod network is supported")
			continue
		}
		if c := n.Pod.VMNetworkCIDR; c != "" && c != "10.0.2.0/24" {
			t.unsupported(np.Child("pod", "vmNetworkCIDR"), "not supported yet: the masquerade guest network is 10.0.2.0/24")
		}
		m.Interfaces = append(m.Interfaces, iface)
	}
	if len(m.Interfaces) > 1 {
		t.unsupported(ip, fmt.Sprintf("%d interfaces: the launcher plumbs one pod interface (eth0) for now", len(m.Interfaces)))
	}
}

// claimInfo is the launcher's view of a claim volume from status.volumeStatus (the controller puts it in
// the launcher's copy of the VMI), nil when the VMI carries none (a local run).
func claimInfo(status []v1.VolumeStatus, volume string) *volumes.ClaimInfo {
	for _, vs := range status {
		c := vs.PersistentVolumeClaimInfo
		if vs.Name != volume || c == nil {
			continue
		}
		info := &volumes.ClaimInfo{Name: c.ClaimName, Block: c.VolumeMode != nil && *c.VolumeMode == corev1.PersistentVolumeBlock}
		if r, ok := c.Requests[corev1.ResourceStorage]; ok {
			info.Requests = &r
		}
		if r, ok := c.Capacity[corev1.ResourceStorage]; ok {
			info.Capacity = &r
		}
		return info
	}
	return nil
}
