package spec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/launcher/network"
	"github.com/kvirt/kvirt/launcher/volumes"
)

const full = `
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: testvmi
  namespace: default
  uid: 2f0d4b7e-0c1a-4b8e-9d55-1a2b3c4d5e6f
spec:
  terminationGracePeriodSeconds: 45
  startStrategy: Paused
  domain:
    cpu:
      sockets: 1
      cores: 2
      threads: 1
      features:
      - name: pcid
        policy: disable
      - name: vmx
    memory:
      guest: 300Mi
    resources:
      requests:
        memory: 512Mi
    firmware:
      uuid: 5d307ca9-b3ef-428c-8861-06e72d69f223
      serial: e4686d2c-6e8d-4335-b8fd-81bee22f4814
      kernelBoot:
        kernelArgs: console=ttyS0
        container:
          image: registry.example/kernels:6.1
          kernelPath: /boot/vmlinux
          initrdPath: /boot/initramfs.cpio
    devices:
      rng: {}
      disks:
      - name: root
        serial: ROOT01
        disk: {bus: virtio}
      - name: cloudinit
        disk: {bus: virtio}
      - name: scratch
        disk: {}
      - name: data
        disk: {readonly: true}
      - name: host
        disk: {}
      interfaces:
      - name: default
        masquerade: {}
        macAddress: "02:00:00:aa:bb:cc"
        ports:
        - {name: http, port: 80}
        - {port: 53, protocol: UDP}
  networks:
  - name: default
    pod: {}
  volumes:
  - name: root
    containerDisk:
      image: registry.example/disks/fedora:40
      path: /disk/fedora.qcow2
  - name: cloudinit
    cloudInitNoCloud:
      userData: "#cloud-config\n"
      networkData: "version: 2\n"
  - name: scratch
    emptyDisk:
      capacity: 2Gi
  - name: data
    persistentVolumeClaim:
      claimName: data-pvc
  - name: host
    hostDisk:
      path: /mnt/disks/host.img
      type: DiskOrCreate
      capacity: 1Gi
`

func parse(t *testing.T, manifest string) *v1.VirtualMachineInstance {
	t.Helper()
	var vmi v1.VirtualMachineInstance
	if err := yaml.UnmarshalStrict([]byte(manifest), &vmi); err != nil {
		t.Fatal(err)
	}
	return &vmi
}

func TestTranslateFull(t *testing.T) {
	m, warnings, err := Translate(parse(t, full))
	if err != nil {
		t.Fatal(err)
	}
	if m.MemoryBytes != 300<<20 || m.VCPUs() != 2 || m.Cores != 2 {
		t.Errorf("memory %d, vCPUs %d", m.MemoryBytes, m.VCPUs())
	}
	if strings.Join(m.CPUDisable, ",") != "pcid" {
		t.Errorf("disable %v", m.CPUDisable)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "spec.domain.cpu.features[1]") {
		t.Errorf("warnings %q", warnings)
	}
	if m.FirmwareUUID != "5d307ca9-b3ef-428c-8861-06e72d69f223" || m.FirmwareSerial != "e4686d2c-6e8d-4335-b8fd-81bee22f4814" {
		t.Errorf("firmware %q %q", m.FirmwareUUID, m.FirmwareSerial)
	}
	if k := m.Kernel; k == nil || k.Image != "registry.example/kernels:6.1" || k.KernelPath != "/boot/vmlinux" || k.Cmdline != "console=ttyS0" {
		t.Errorf("kernel %+v", k)
	}
	if !m.StartPaused || m.TerminationGrace != 45*time.Second || !m.RNG || !m.SerialConsole {
		t.Errorf("paused %v grace %v rng %v", m.StartPaused, m.TerminationGrace, m.RNG)
	}
	want := []struct {
		name string
		kind VolumeKind
		ro   bool
	}{{"root", ContainerDisk, false}, {"cloudinit", CloudInitNoCloud, true}, {"scratch", EmptyDisk, false}, {"data", PVC, true}, {"host", HostDisk, false}}
	if len(m.Disks) != len(want) {
		t.Fatalf("disks %+v", m.Disks)
	}
	for i, w := range want {
		d := m.Disks[i]
		if d.Name != w.name || d.Kind != w.kind || d.ReadOnly != w.ro {
			t.Errorf("disk %d: %+v, want %+v", i, d, w)
		}
	}
	if m.Disks[0].Serial != "ROOT01" || m.Disks[0].ImagePath != "/disk/fedora.qcow2" || m.Disks[0].VolumeField != "spec.volumes[0]" {
		t.Errorf("root disk %+v", m.Disks[0])
	}
	if nc := m.Disks[1].NoCloud; nc.InstanceID != "2f0d4b7e-0c1a-4b8e-9d55-1a2b3c4d5e6f" || nc.Hostname != "testvmi" {
		t.Errorf("nocloud %+v", nc)
	}
	if m.Disks[2].Capacity.String() != "2Gi" || m.Disks[4].HostDiskType != volumes.HostDiskOrCreate {
		t.Errorf("capacity %v type %v", m.Disks[2].Capacity, m.Disks[4].HostDiskType)
	}
	if len(m.Interfaces) != 1 {
		t.Fatalf("interfaces %+v", m.Interfaces)
	}
	in := m.Interfaces[0]
	if in.Binding != network.Masquerade || in.MAC.String() != "02:00:00:aa:bb:cc" || len(in.Ports) != 2 || in.Ports[1].Protocol != "UDP" {
		t.Errorf("interface %+v", in)
	}
}

func TestTranslateDefaults(t *testing.T) {
	m, _, err := Translate(parse(t, `
metadata: {name: tiny, uid: 11111111-2222-3333-4444-555555555555}
spec:
  domain:
    resources:
      requests: {memory: 64Mi, cpu: 1500m}
    devices: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	if m.MemoryBytes != 64<<20 || m.VCPUs() != 2 || m.TerminationGrace != 30*time.Second {
		t.Errorf("memory %d vCPUs %d grace %v", m.MemoryBytes, m.VCPUs(), m.TerminationGrace)
	}
	// A standalone VMI without firmware.uuid uses its own UID; the default interface is bridge on the pod.
	if m.FirmwareUUID != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("uuid %q", m.FirmwareUUID)
	}
	if len(m.Interfaces) != 1 || m.Interfaces[0].Binding != network.Bridge || m.Interfaces[0].Name != "default" {
		t.Errorf("interfaces %+v", m.Interfaces)
	}
	if m.Kernel != nil {
		t.Errorf("kernel %+v", m.Kernel)
	}
}

func TestTranslateErrors(t *testing.T) {
	base := `
metadata: {name: bad, uid: 11111111-2222-3333-4444-555555555555}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
`
	for _, tc := range []struct{ name, extra, want string }{
		{"no memory", "\nmetadata: {name: x}\nspec: {domain: {devices: {}}}", "no memory requested"},
		{"memory below 1M", "\nmetadata: {name: x}\nspec: {domain: {resources: {requests: {memory: 512Ki}}}}", "spec.domain.resources.requests.memory '512Ki': must be greater than or equal to 1M."},
		{"too many cpus", base + "    cpu: {sockets: 2, cores: 40}\n", "80 vCPUs"},
		{"huge topology", base + "    cpu: {sockets: 4294967295, cores: 4294967295, threads: 4294967295}\n", "exceed kvirt's maximum"},
		{"huge cpu limit", "\nmetadata: {name: x}\nspec: {domain: {resources: {requests: {memory: 64Mi}, limits: {cpu: 9e15}}}}", "exceed kvirt's maximum"},
		{"cpu model", base + "    cpu: {model: Skylake-Server}\n", "spec.domain.cpu.model: Forbidden: named CPU models"},
		{"sata", base + "    devices:\n      disks: [{name: d, disk: {bus: sata}}]\n  volumes: [{name: d, emptyDisk: {capacity: 1Gi}}]\n", "spec.domain.devices.disks[0].disk.bus: Forbidden: bus sata"},
		{"cdrom", base + "    devices:\n      disks: [{name: d, cdrom: {}}]\n  volumes: [{name: d, emptyDisk: {capacity: 1Gi}}]\n", "spec.domain.devices.disks[0].cdrom: Forbidden"},
		{"long serial", base + "    devices:\n      disks: [{name: d, serial: abcdefghijklmnopqrstuvwxyz}]\n  volumes: [{name: d, emptyDisk: {capacity: 1Gi}}]\n", "spec.domain.devices.disks[0].serial"},
		{"secret ref", base + "    devices:\n      disks: [{name: c}]\n  volumes: [{name: c, cloudInitNoCloud: {secretRef: {name: s}}}]\n", "spec.volumes[0].cloudInitNoCloud.secretRef: Forbidden"},
		{"no source", base + "    devices:\n      disks: [{name: d}]\n  volumes: [{name: d}]\n", "spec.volumes[0]"},
		{"e1000", base + "    devices:\n      interfaces: [{name: default, model: e1000, bridge: {}}]\n  networks: [{name: default, pod: {}}]\n", "spec.domain.devices.interfaces[0].model: Forbidden"},
		{"bridge ports", base + "    devices:\n      interfaces: [{name: default, bridge: {}, ports: [{port: 80}]}]\n  networks: [{name: default, pod: {}}]\n", "spec.domain.devices.interfaces[0].ports: Forbidden"},
		{"bad mac", base + "    devices:\n      interfaces: [{name: default, bridge: {}, macAddress: zz}]\n  networks: [{name: default, pod: {}}]\n", "spec.domain.devices.interfaces[0].macAddress"},
		{"kernel without image", base + "    firmware: {kernelBoot: {kernelArgs: quiet}}\n", "spec.domain.firmware.kernelBoot.container"},
		{"cidr", base + "    devices:\n      interfaces: [{name: default, masquerade: {}}]\n  networks: [{name: default, pod: {vmNetworkCIDR: 10.1.0.0/24}}]\n", "vmNetworkCIDR: Forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Translate(parse(t, tc.extra))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPrepareDisks(t *testing.T) {
	m, _, err := Translate(parse(t, `
metadata: {name: disks, uid: 11111111-2222-3333-4444-555555555555}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      disks: [{name: ci}, {name: scratch}, {name: data}, {name: host}]
  volumes:
  - {name: ci, cloudInitNoCloud: {userData: "#cloud-config\n"}}
  - {name: scratch, emptyDisk: {capacity: 16Mi}}
  - {name: data, persistentVolumeClaim: {claimName: pvc1}}
  - {name: host, hostDisk: {path: /var/disks/h.img, type: DiskOrCreate, capacity: 8Mi}}
`))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dirs := Dirs{Work: t.TempDir(), Root: root}
	// The PVC is not mounted: a clear error naming the volume, and nothing left open.
	_, err = PrepareDisks(context.Background(), m, dirs)
	var fe *volumes.FieldError
	if !errors.As(err, &fe) || fe.Field != "spec.volumes[2].persistentVolumeClaim" {
		t.Fatalf("missing PVC: %v", err)
	}
	p := volumes.PVCDiskPath(root, "data")
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, make([]byte, 1<<20), 0o644)
	disks, err := PrepareDisks(context.Background(), m, dirs)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDisks(disks)
	sizes := []int64{-1, 16 << 20, 1 << 20, 8 << 20}
	for i, d := range disks {
		if sizes[i] >= 0 && d.Backend.Size() != sizes[i] {
			t.Errorf("disk %s size %d, want %d", d.Name, d.Backend.Size(), sizes[i])
		}
	}
	if !disks[0].ReadOnly || disks[1].ReadOnly {
		t.Errorf("read-only flags %v %v", disks[0].ReadOnly, disks[1].ReadOnly)
	}
	for _, d := range disks {
		fastPaths(t, d)
	}
}

// fastPaths checks that a prepared disk gets virtio-blk's vectored I/O (one call per request, not one per
// guest buffer) and DISCARD.
func fastPaths(t *testing.T, d PreparedDisk) {
	t.Helper()
	if _, ok := d.Backend.(blk.VectorIO); !ok {
		t.Errorf("disk %s (%T) has no vectored I/O", d.Name, d.Backend)
	}
	if _, ok := d.Backend.(blk.Discarder); !ok {
		t.Errorf("disk %s (%T) cannot discard", d.Name, d.Backend)
	}
}

func FuzzTranslate(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("spec: {domain: {cpu: {cores: 4294967295, sockets: 4294967295}, resources: {limits: {cpu: 9e18}}}}"))
	f.Add([]byte("spec: {domain: {devices: {disks: [{name: d, cache: none, io: native}]}}, volumes: [{name: d, persistentVolumeClaim: {claimName: c}}]}\n" +
		"status: {volumeStatus: [{name: d, persistentVolumeClaimInfo: {volumeMode: Block, capacity: {storage: 1Ki}, requests: {storage: -1}}}]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var vmi v1.VirtualMachineInstance
		if yaml.Unmarshal(b, &vmi) != nil {
			return
		}
		Translate(&vmi)
	})
}

// Memory below what the VMM boots is raised to it with a warning (KubeVirt runs it; its own tests patch
// 4096Ki into a VM); a memory limit alone gives the guest its memory, as KubeVirt's webhook does. The
// warning names memory.guest, which the API defaults fill from the request or limit first.
func TestTranslateMemory(t *testing.T) {
	for _, tc := range []struct {
		name, resources string
		want            uint64
		warn            string
	}{
		{"4096Ki request raised", "requests: {memory: 4096Ki}", MinMemoryBytes, "spec.domain.memory.guest: 4Mi is below the 16 MiB"},
		{"1Mi request raised", "requests: {memory: 1Mi}", MinMemoryBytes, "below the 16 MiB"},
		{"16Mi kept", "requests: {memory: 16Mi}", 16 << 20, ""},
		{"limit only", "limits: {memory: 96Mi}", 96 << 20, ""},
		{"small limit only", "limits: {memory: 4Mi}", MinMemoryBytes, "spec.domain.memory.guest: 4Mi is below"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, warnings, err := Translate(parse(t, "\nmetadata: {name: x}\nspec: {domain: {resources: {"+tc.resources+"}}}"))
			if err != nil {
				t.Fatal(err)
			}
			if m.MemoryBytes != tc.want {
				t.Errorf("memory %d, want %d", m.MemoryBytes, tc.want)
			}
			got := strings.Join(warnings, "\n")
			if (tc.warn == "") != (got == "") || !strings.Contains(got, tc.warn) {
				t.Errorf("warnings %q, want %q", got, tc.warn)
			}
		})
	}
}

func TestHostnameOf(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"testvmi", "testvmi"},
		{"web.example", "web"},
		{strings.Repeat("a", 70), strings.Repeat("a", 63)},
		{strings.Repeat("a", 62) + "-bcd", strings.Repeat("a", 62)},
	} {
		if got := hostnameOf(tc.in); got != tc.want {
			t.Errorf("hostnameOf(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
