package v1

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

func ptr[T any](v T) *T { return &v }

// A manifest in the shape of KubeVirt's own examples, with fields kvirt does not model.
const kubevirtVM = `
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: testvm
  labels: {kubevirt.io/vm: testvm}
spec:
  runStrategy: Always
  dataVolumeTemplates: []
  template:
    metadata:
      labels: {kubevirt.io/size: small, kubevirt.io/domain: testvm}
    spec:
      terminationGracePeriodSeconds: 0
      domain:
        cpu: {cores: 2, sockets: 1, threads: 1, features: [{name: pcid, policy: require}]}
        machine: {type: q35}
        firmware:
          serial: abc
          kernelBoot:
            kernelArgs: console=ttyS0
            container: {image: quay.io/k/kernel:1, kernelPath: /boot/vmlinux, initrdPath: /boot/initrd}
        devices:
          tpm: {}
          disks:
          - name: containerdisk
            disk: {bus: virtio}
            bootOrder: 1
            serial: D1
          - name: cloudinitdisk
            disk: {bus: virtio, readonly: true}
          interfaces:
          - name: default
            masquerade: {}
            macAddress: "02:00:00:aa:bb:cc"
            ports: [{name: ssh, port: 22, protocol: TCP}]
        resources:
          requests: {memory: 64M}
      networks:
      - name: default
        pod: {}
      volumes:
      - name: containerdisk
        containerDisk: {image: quay.io/kubevirt/cirros-container-disk-demo, imagePullPolicy: IfNotPresent}
      - name: cloudinitdisk
        cloudInitNoCloud:
          userData: |
            #!/bin/sh
            echo hi
status:
  printableStatus: Running
  stateChangeRequests: [{action: Stop, uid: "1234"}]
  startFailure: {consecutiveFailCount: 2, lastFailedVMIUID: abc, retryAfterTimestamp: "2026-01-01T00:00:00Z"}
`

func TestDecodeKubeVirtManifest(t *testing.T) {
	var vm VirtualMachine
	if err := yaml.Unmarshal([]byte(kubevirtVM), &vm); err != nil {
		t.Fatalf("decode: %v", err)
	}
	spec := vm.Spec.Template.Spec
	if got := *vm.Spec.RunStrategy; got != RunStrategyAlways {
		t.Errorf("runStrategy = %q", got)
	}
	if spec.VCPUs() != 2 {
		t.Errorf("VCPUs = %d, want 2", spec.VCPUs())
	}
	if m, ok := spec.GuestMemory(); !ok || m.Cmp(resource.MustParse("64M")) != 0 {
		t.Errorf("GuestMemory = %v %v", m.String(), ok)
	}
	if spec.GracePeriodSeconds() != 0 {
		t.Errorf("grace = %d, want 0", spec.GracePeriodSeconds())
	}
	kb := spec.Domain.Firmware.KernelBoot
	if kb.KernelArgs != "console=ttyS0" || kb.Container.KernelPath != "/boot/vmlinux" || kb.Container.InitrdPath != "/boot/initrd" {
		t.Errorf("kernelBoot = %+v %+v", kb, kb.Container)
	}
	d := spec.Domain.Devices
	if *d.Disks[0].BootOrder != 1 || d.Disks[0].Serial != "D1" || !d.Disks[1].Disk.ReadOnly {
		t.Errorf("disks = %+v", d.Disks)
	}
	if d.Interfaces[0].Masquerade == nil || d.Interfaces[0].Ports[0].Port != 22 || d.Interfaces[0].MacAddress != "02:00:00:aa:bb:cc" {
		t.Errorf("interfaces = %+v", d.Interfaces)
	}
	if spec.Volumes[1].CloudInitNoCloud == nil || !strings.Contains(spec.Volumes[1].CloudInitNoCloud.UserData, "echo hi") {
		t.Errorf("volumes = %+v", spec.Volumes)
	}
	if vm.Status.StartFailure.ConsecutiveFailCount != 2 || *vm.Status.StateChangeRequests[0].UID != "1234" {
		t.Errorf("status = %+v", vm.Status)
	}
	if errs := ValidateVirtualMachine(&vm); len(errs) != 0 {
		t.Errorf("valid manifest rejected: %v", errs)
	}

	unknown, err := UnknownFields([]byte(kubevirtVM), &VirtualMachine{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"spec.dataVolumeTemplates", "spec.template.spec.domain.devices.tpm"}
	if !reflect.DeepEqual(unknown, want) {
		t.Errorf("UnknownFields = %q, want %q", unknown, want)
	}
}

func TestUnknownFieldsBadInput(t *testing.T) {
	if _, err := UnknownFields([]byte("spec: [\n"), &VirtualMachine{}); err == nil {
		t.Error("broken YAML accepted")
	}
	if _, err := UnknownFields([]byte(`{"spec": {"running": "yes"}}`), &VirtualMachine{}); err == nil {
		t.Error("wrong type accepted")
	}
}

func TestJSONFieldNames(t *testing.T) {
	uid := types.UID("u1")
	vm := VirtualMachine{Status: VirtualMachineStatus{
		StateChangeRequests: []VirtualMachineStateChangeRequest{{Action: StopRequest, UID: &uid, Data: map[string]string{"paused": "true"}}},
		StartFailure:        &VirtualMachineStartFailure{ConsecutiveFailCount: 1, LastFailedVMIUID: "x"},
	}}
	vmi := VirtualMachineInstance{Status: VirtualMachineInstanceStatus{
		Interfaces: []VirtualMachineInstanceNetworkInterface{{IP: "10.0.0.1", IPs: []string{"10.0.0.1"}, MAC: "m", Name: "default"}},
	}}
	for _, tc := range []struct {
		obj  any
		want []string
	}{
		{vm, []string{`"stateChangeRequests":[{"action":"Stop","data":{"paused":"true"},"uid":"u1"}]`, `"consecutiveFailCount":1`, `"lastFailedVMIUID":"x"`}},
		{vmi, []string{`"ipAddress":"10.0.0.1"`, `"ipAddresses":["10.0.0.1"]`, `"mac":"m"`}},
	} {
		b, err := json.Marshal(tc.obj)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s\nlacks %s", b, w)
			}
		}
	}
}

func TestRunStrategy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running *bool
		rs      *VirtualMachineRunStrategy
		want    VirtualMachineRunStrategy
		wantErr bool
	}{
		{"running true", ptr(true), nil, RunStrategyAlways, false},
		{"running false", ptr(false), nil, RunStrategyHalted, false},
		{"neither", nil, nil, RunStrategyHalted, false},
		{"manual", nil, ptr(RunStrategyManual), RunStrategyManual, false},
		{"both", ptr(true), ptr(RunStrategyAlways), RunStrategyUnknown, true},
	} {
		vm := VirtualMachine{Spec: VirtualMachineSpec{Running: tc.running, RunStrategy: tc.rs}}
		got, err := vm.RunStrategy()
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: RunStrategy() = %q, %v; want %q, err %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestSchemeAndDeepCopy(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []runtime.Object{&VirtualMachine{}, &VirtualMachineList{}, &VirtualMachineInstance{}, &VirtualMachineInstanceList{}} {
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil || len(gvks) != 1 || gvks[0].GroupVersion() != GroupVersion {
			t.Errorf("%T: kinds %v, %v", obj, gvks, err)
		}
	}
	var vm VirtualMachine
	if err := yaml.Unmarshal([]byte(kubevirtVM), &vm); err != nil {
		t.Fatal(err)
	}
	cp := vm.DeepCopy()
	if !reflect.DeepEqual(cp, &vm) {
		t.Fatal("deep copy differs")
	}
	cp.Spec.Template.Spec.Domain.Devices.Disks[0].Name = "changed"
	*cp.Spec.Template.Spec.Domain.Devices.Disks[0].BootOrder = 7
	if vm.Spec.Template.Spec.Domain.Devices.Disks[0].Name != "containerdisk" || *vm.Spec.Template.Spec.Domain.Devices.Disks[0].BootOrder != 1 {
		t.Error("deep copy shares memory with the original")
	}
}

func TestVMIHelpers(t *testing.T) {
	vmi := &VirtualMachineInstance{}
	if !vmi.IsUnprocessed() || vmi.IsFinal() || vmi.IsRunning() || vmi.ShouldStartPaused() {
		t.Error("fresh VMI helpers wrong")
	}
	vmi.Status.Phase = Failed
	if !vmi.IsFinal() {
		t.Error("Failed not final")
	}
	vmi.Status.Phase = Succeeded
	if !vmi.IsFinal() {
		t.Error("Succeeded not final")
	}
	vmi.Spec.StartStrategy = ptr(StartStrategyPaused)
	if !vmi.ShouldStartPaused() {
		t.Error("Paused start strategy not seen")
	}
	vmi.Status.Conditions = []VirtualMachineInstanceCondition{{Type: VirtualMachineInstanceReady, Status: "True"}}
	if !vmi.Status.HasCondition(VirtualMachineInstanceReady, "True") || vmi.Status.HasCondition(VirtualMachineInstancePaused, "True") {
		t.Error("HasCondition wrong")
	}
}
