package controller

import (
	"fmt"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The firmware identity a VM's template gets (docs/BEHAVIOUR.md §8 "firmware"): on the controller's
// first sync (kvirt's stand-in for KubeVirt's VM mutator on create) a random UUID and a random serial
// where empty; later only an empty UUID is filled, with KubeVirt's legacy name-derived UUID.
func TestABIDefaults(t *testing.T) {
	const userUUID, userSerial = "11111111-aaaa-bbbb-cccc-555555555555", "user-serial"
	for _, tc := range []struct {
		name       string
		fw         *v1.Firmware
		isNew      bool
		wantUUID   types.UID
		wantSerial string
		changed    bool
	}{
		{"new, no firmware: random uuid and serial", nil, true, "rand-1", "rand-2", true},
		{"new, user uuid: kept, random serial", &v1.Firmware{UUID: userUUID}, true, userUUID, "rand-1", true},
		{"new, user serial: kept, random uuid", &v1.Firmware{Serial: userSerial}, true, "rand-1", userSerial, true},
		{"new, both set: nothing", &v1.Firmware{UUID: userUUID, Serial: userSerial}, true, userUUID, userSerial, false},
		{"later, uuid removed: legacy uuid, no serial", &v1.Firmware{}, false, LegacyFirmwareUUID("testvm"), "", true},
		{"later, serial removed: stays empty", &v1.Firmware{UUID: userUUID}, false, userUUID, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "testvm"},
				Spec: v1.VirtualMachineSpec{Template: &v1.VirtualMachineInstanceTemplateSpec{}}}
			vm.Spec.Template.Spec.Domain.Firmware = tc.fw
			n := 0
			rand := func() string { n++; return fmt.Sprintf("rand-%d", n) }
			if got := applyABIDefaults(vm, tc.isNew, rand); got != tc.changed {
				t.Errorf("changed %v, want %v", got, tc.changed)
			}
			fw := vm.Spec.Template.Spec.Domain.Firmware
			if fw.UUID != tc.wantUUID || fw.Serial != tc.wantSerial {
				t.Errorf("firmware uuid %q serial %q, want %q %q", fw.UUID, fw.Serial, tc.wantUUID, tc.wantSerial)
			}
			if applyABIDefaults(vm, false, rand) {
				t.Error("a second application changed something (the controller would patch forever)")
			}
		})
	}
}

// KubeVirt's legacy UUID: UUIDv5 of the VM name in its namespace (python3: uuid.uuid5(UUID("6a1a24a1-…"),
// name)).
func TestLegacyFirmwareUUID(t *testing.T) {
	for name, want := range map[string]types.UID{
		"testvm":    "5a9fc181-957e-5c32-9e5a-2de5e9673531",
		"vm-cirros": "0d2a2043-41c0-59c3-9b17-025022203668",
	} {
		if got := LegacyFirmwareUUID(name); got != want {
			t.Errorf("LegacyFirmwareUUID(%q) = %s, want %s", name, got, want)
		}
	}
}

// Interfaces without a MAC get a stable one derived from the VM UID (beyond KubeVirt); user MACs stay.
func TestABIDefaultsMACs(t *testing.T) {
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "testvm", UID: "11111111-2222-3333-4444-555555555555"},
		Spec: v1.VirtualMachineSpec{Template: &v1.VirtualMachineInstanceTemplateSpec{}}}
	vm.Spec.Template.Spec.Domain.Firmware = &v1.Firmware{UUID: "u", Serial: "s"}
	vm.Spec.Template.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default"}, {Name: "second", MacAddress: "02:00:00:00:00:09"}, {Name: "third"}}
	if !applyABIDefaults(vm, false, nil) {
		t.Fatal("nothing applied")
	}
	ifs := vm.Spec.Template.Spec.Domain.Devices.Interfaces
	if ifs[1].MacAddress != "02:00:00:00:00:09" {
		t.Fatalf("user MAC overwritten: %s", ifs[1].MacAddress)
	}
	if ifs[0].MacAddress == "" || ifs[0].MacAddress == ifs[2].MacAddress || ifs[0].MacAddress[:3] != "02:" {
		t.Fatalf("MACs %q %q", ifs[0].MacAddress, ifs[2].MacAddress)
	}
	if ifs[0].MacAddress != StableMAC(vm.UID, "default") {
		t.Fatal("MAC not stable")
	}
	if applyABIDefaults(vm, false, nil) {
		t.Fatal("second application changed something")
	}
}
