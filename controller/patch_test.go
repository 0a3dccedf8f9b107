package controller

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// abiDefaultsOps writes exactly the fields it fills in, never a whole object the user may have put
// unknown fields into.
func TestABIDefaultsOps(t *testing.T) {
	mk := func(fw *v1.Firmware, macs ...string) *v1.VirtualMachine {
		vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm", UID: "11111111-2222-3333-4444-555555555555"},
			Spec: v1.VirtualMachineSpec{Template: &v1.VirtualMachineInstanceTemplateSpec{}}}
		vm.Spec.Template.Spec.Domain.Firmware = fw
		for i, m := range macs {
			vm.Spec.Template.Spec.Domain.Devices.Interfaces = append(vm.Spec.Template.Spec.Domain.Devices.Interfaces, v1.Interface{Name: string(rune('a' + i)), MacAddress: m})
		}
		return vm
	}
	rand := func() string { return "r" }
	const fw = "/spec/template/spec/domain/firmware"
	for _, tc := range []struct {
		name  string
		vm    *v1.VirtualMachine
		isNew bool
		want  []string // "op path" of each op
		value map[string]any
	}{
		{"new, no firmware: the object is added", mk(nil), true, []string{"add " + fw}, map[string]any{"uuid": "r", "serial": "r"}},
		{"later, no firmware: the object with the uuid", mk(nil), false, []string{"add " + fw}, map[string]any{"uuid": string(LegacyFirmwareUUID("vm"))}},
		{"firmware without uuid (maybe unknown fields): only the uuid", mk(&v1.Firmware{Serial: "s"}), true, []string{"add " + fw + "/uuid"}, nil},
		{"new, firmware without serial: only the serial", mk(&v1.Firmware{UUID: "u"}), true, []string{"add " + fw + "/serial"}, nil},
		{"all set: nothing", mk(&v1.Firmware{UUID: "u"}, "02:00:00:00:00:01"), false, nil, nil},
		{"one MAC missing: tested by name, then only that member", mk(&v1.Firmware{UUID: "u"}, "02:00:00:00:00:01", ""), false,
			[]string{"test /spec/template/spec/domain/devices/interfaces/1/name", "add /spec/template/spec/domain/devices/interfaces/1/macAddress"}, nil},
		{"no template: nothing", &v1.VirtualMachine{}, true, nil, nil},
	} {
		ops := abiDefaultsOps(tc.vm, tc.isNew, rand)
		var got []string
		for _, op := range ops {
			got = append(got, op.Op+" "+op.Path)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: ops %v, want %v", tc.name, got, tc.want)
		}
		if tc.value != nil {
			b, _ := json.Marshal(ops[0].Value)
			w, _ := json.Marshal(tc.value)
			if string(b) != string(w) {
				t.Errorf("%s: firmware value %s, want %s", tc.name, b, w)
			}
		}
	}
	body, err := jsonPatch("42", setField("/metadata/finalizers", []string(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"op":"replace","path":"/metadata/resourceVersion","value":"42"},{"op":"add","path":"/metadata/finalizers","value":[]}]`; string(body) != want {
		t.Fatalf("patch %s, want %s", body, want)
	}
	var back []map[string]any
	if err := json.Unmarshal(body, &back); err != nil {
		t.Fatal(err)
	}
}

// The VMI is the template's spec as stored (unknown fields included) with our metadata; a paused start
// adds startStrategy; a re-created VM (other UID) is refused.
func TestVMIFromRawTemplate(t *testing.T) {
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "ns", UID: "u1"},
		Spec: v1.VirtualMachineSpec{Template: &v1.VirtualMachineInstanceTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}}}}
	raw := []byte(`{"metadata":{"name":"vm","uid":"u1"},"spec":{"runStrategy":"Always","template":{"metadata":{"labels":{"a":"b"}},
		"spec":{"evictionStrategy":"LiveMigrate","domain":{"memory":{"guest":"64Mi"},"devices":{"tpm":{},"interfaces":[{"name":"default","model":"virtio","masquerade":{}}]}}}}}}`)
	body, err := vmiFromRawTemplate(newVMIFromTemplate(vm, true), raw, "u1")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	spec := got["spec"].(map[string]any)
	meta := got["metadata"].(map[string]any)
	ifc := spec["domain"].(map[string]any)["devices"].(map[string]any)["interfaces"].([]any)[0].(map[string]any)
	if got["kind"] != "VirtualMachineInstance" || got["apiVersion"] != "kubevirt.io/v1" || meta["name"] != "vm" || meta["namespace"] != "ns" ||
		spec["evictionStrategy"] != "LiveMigrate" || ifc["model"] != "virtio" || spec["startStrategy"] != "Paused" ||
		len(meta["ownerReferences"].([]any)) != 1 || meta["labels"].(map[string]any)[v1.VirtualMachineNameLabel] != "vm" {
		t.Fatalf("VMI %s", body)
	}
	if _, ok := got["status"]; ok {
		t.Fatalf("VMI carries a status: %s", body)
	}
	if _, err := vmiFromRawTemplate(newVMIFromTemplate(vm, false), raw, "u2"); err == nil {
		t.Fatal("a VM with another UID was accepted")
	}
	if _, err := vmiFromRawTemplate(newVMIFromTemplate(vm, false), []byte(`{"metadata":{"uid":"u1"},"spec":{}}`), "u1"); err == nil {
		t.Fatal("a VM without a template was accepted")
	}
}
