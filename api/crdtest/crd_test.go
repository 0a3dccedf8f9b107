package crdtest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

func loadCRD(t *testing.T, file string) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "crds", file))
	if err != nil {
		t.Fatalf("read CRD (run `just generate`): %v", err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &crd); err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}
	return &crd
}

func internal(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition) *apiextensions.CustomResourceDefinition {
	t.Helper()
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(crd)
	var out apiextensions.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(crd, &out, nil); err != nil {
		t.Fatal(err)
	}
	return &out
}

type column struct {
	Name, JSONPath string
	Priority       int32
}

func TestCRDShape(t *testing.T) {
	for _, tc := range []struct {
		file       string
		plural     string
		shortNames []string
		columns    []column
	}{
		{"kubevirt.io_virtualmachines.yaml", "virtualmachines", []string{"vm", "vms"}, []column{
			{"Age", ".metadata.creationTimestamp", 0},
			{"Status", ".status.printableStatus", 0},
			{"Ready", ".status.conditions[?(@.type=='Ready')].status", 0},
		}},
		{"kubevirt.io_virtualmachineinstances.yaml", "virtualmachineinstances", []string{"vmi", "vmis"}, []column{
			{"Age", ".metadata.creationTimestamp", 0},
			{"Phase", ".status.phase", 0},
			{"IP", ".status.interfaces[0].ipAddress", 0},
			{"NodeName", ".status.nodeName", 0},
			{"Ready", ".status.conditions[?(@.type=='Ready')].status", 0},
			{"Live-Migratable", ".status.conditions[?(@.type=='LiveMigratable')].status", 1},
			{"Paused", ".status.conditions[?(@.type=='Paused')].status", 1},
		}},
	} {
		crd := loadCRD(t, tc.file)
		if crd.Spec.Group != "kubevirt.io" || crd.Spec.Names.Plural != tc.plural || crd.Name != tc.plural+".kubevirt.io" {
			t.Errorf("%s: group/name %s %s", tc.file, crd.Spec.Group, crd.Name)
		}
		if !reflect.DeepEqual(crd.Spec.Names.ShortNames, tc.shortNames) || !reflect.DeepEqual(crd.Spec.Names.Categories, []string{"all"}) {
			t.Errorf("%s: short names %v categories %v", tc.file, crd.Spec.Names.ShortNames, crd.Spec.Names.Categories)
		}
		if crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
			t.Errorf("%s: scope %s", tc.file, crd.Spec.Scope)
		}
		if len(crd.Spec.Versions) != 2 {
			t.Fatalf("%s: %d versions", tc.file, len(crd.Spec.Versions))
		}
		v1, alpha := crd.Spec.Versions[0], crd.Spec.Versions[1]
		if v1.Name != "v1" || !v1.Served || !v1.Storage || v1.Deprecated {
			t.Errorf("%s: v1 = %+v", tc.file, v1)
		}
		if alpha.Name != "v1alpha3" || !alpha.Served || alpha.Storage || !alpha.Deprecated || alpha.DeprecationWarning == nil ||
			*alpha.DeprecationWarning != "kubevirt.io/v1alpha3 is now deprecated and will be removed in a future release." {
			t.Errorf("%s: v1alpha3 = %+v", tc.file, alpha)
		}
		if !reflect.DeepEqual(v1.Schema, alpha.Schema) || !reflect.DeepEqual(v1.AdditionalPrinterColumns, alpha.AdditionalPrinterColumns) {
			t.Errorf("%s: v1alpha3 schema or columns differ from v1", tc.file)
		}
		if crd.Spec.Conversion == nil || crd.Spec.Conversion.Strategy != apiextensionsv1.NoneConverter {
			t.Errorf("%s: conversion %+v", tc.file, crd.Spec.Conversion)
		}
		for _, v := range crd.Spec.Versions {
			if v.Subresources == nil || v.Subresources.Status == nil {
				t.Errorf("%s %s: no status subresource", tc.file, v.Name)
			}
			var got []column
			for _, c := range v.AdditionalPrinterColumns {
				got = append(got, column{c.Name, c.JSONPath, c.Priority})
			}
			if !reflect.DeepEqual(got, tc.columns) {
				t.Errorf("%s %s: columns\n got  %v\n want %v", tc.file, v.Name, got, tc.columns)
			}
		}
		// kubectl apply (client side) stores the whole object in an annotation; all annotations together
		// must stay under 256 KiB.
		if raw, err := json.Marshal(crd); err != nil || len(raw) > 200_000 {
			t.Errorf("%s: %d bytes as JSON (%v): too close to kubectl apply's 256 KiB annotation limit; shorten descriptions (maxDescLen in api/api.just)", tc.file, len(raw), err)
		}
		if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), internal(t, crd)); len(errs) != 0 {
			t.Errorf("%s: the apiserver would reject this CRD: %v", tc.file, errs.ToAggregate())
		}
	}
}

// apiserver validates obj (YAML) against a CRD version the way kube-apiserver
// does on create: prune, default, OpenAPI schema validation, CEL rules.
type apiserver struct {
	structural *schema.Structural
	schema     apiservervalidation.SchemaCreateValidator
	cel        *cel.Validator
}

func newAPIServer(t *testing.T, file string) *apiserver {
	t.Helper()
	crd := internal(t, loadCRD(t, file))
	// The internal form hoists a schema shared by all versions to spec.validation.
	var props *apiextensions.JSONSchemaProps
	if crd.Spec.Validation != nil {
		props = crd.Spec.Validation.OpenAPIV3Schema
	} else {
		props = crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	}
	s, err := schema.NewStructural(props)
	if err != nil {
		t.Fatal(err)
	}
	sv, _, err := apiservervalidation.NewSchemaValidator(props)
	if err != nil {
		t.Fatal(err)
	}
	return &apiserver{structural: s, schema: sv, cel: cel.NewValidator(s, true, celconfig.PerCallLimit)}
}

func (a *apiserver) create(t *testing.T, manifest string) (map[string]any, []string) {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(manifest), &obj); err != nil {
		t.Fatal(err)
	}
	pruning.Prune(obj, a.structural, true)
	defaulting.Default(obj, a.structural)
	errs := apiservervalidation.ValidateCustomResource(nil, obj, a.schema)
	celErrs, _ := a.cel.Validate(context.Background(), nil, a.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	errs = append(errs, celErrs...)
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, strings.TrimPrefix(e.Field, ".")+": "+e.Detail)
	}
	return obj, msgs
}

const vmTemplate = `
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: testvm}
spec:
  RUN
  template:
    metadata: {labels: {kubevirt.io/vm: testvm}}
    spec:
      domain:
        devices:
          disks: [{name: root, disk: {bus: virtio}}]
          tpm: {}
        resources: {requests: {memory: 64Mi}}
      volumes: [{name: root, containerDisk: {image: img}}]
`

func TestVMValidationMessages(t *testing.T) {
	a := newAPIServer(t, "kubevirt.io_virtualmachines.yaml")
	for _, tc := range []struct {
		run  string
		want []string
	}{
		{"runStrategy: Always", nil},
		{"running: false", nil},
		{"running: true\n  runStrategy: Always", []string{"spec.running: Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead"}},
		{"", []string{"spec.running: RunStrategy must be specified"}},
		{"runStrategy: Sometimes", []string{"spec.runStrategy: Invalid RunStrategy (Sometimes)"}},
		{"runStrategy: WaitAsReceiver", []string{"spec.runStrategy: Invalid RunStrategy (WaitAsReceiver), DecentralizedLiveMigration feature gate is not enabled in kubevirt resource"}},
	} {
		obj, msgs := a.create(t, strings.Replace(vmTemplate, "RUN", tc.run, 1))
		if !reflect.DeepEqual(msgs, tc.want) {
			t.Errorf("%q:\n got  %q\n want %q", tc.run, msgs, tc.want)
		}
		if tc.want != nil {
			continue
		}
		// Unknown KubeVirt fields survive pruning; the template's labels too.
		tmpl := obj["spec"].(map[string]any)["template"].(map[string]any)
		devices := tmpl["spec"].(map[string]any)["domain"].(map[string]any)["devices"].(map[string]any)
		if _, ok := devices["tpm"]; !ok {
			t.Error("unknown field spec.template.spec.domain.devices.tpm was pruned")
		}
		if tmpl["metadata"].(map[string]any)["labels"] == nil {
			t.Error("template labels were pruned")
		}
	}
}

func TestVMStatusDefault(t *testing.T) {
	a := newAPIServer(t, "kubevirt.io_virtualmachines.yaml")
	obj, msgs := a.create(t, strings.Replace(vmTemplate, "RUN", "runStrategy: Halted", 1)+"status: {created: false, junk: 1}\n")
	if len(msgs) != 0 {
		t.Fatal(msgs)
	}
	status := obj["status"].(map[string]any)
	if status["printableStatus"] != "Stopped" {
		t.Errorf("printableStatus default = %v, want Stopped", status["printableStatus"])
	}
	if _, ok := status["junk"]; ok {
		t.Error("unknown status field kept: status must be pruned")
	}
}

const vmiTemplate = `
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: testvmi}
spec:
  domain:
    MEM
    devices: {}
`

func TestVMIMemoryRequired(t *testing.T) {
	a := newAPIServer(t, "kubevirt.io_virtualmachineinstances.yaml")
	const noMemory = "spec: no memory requested, at least one of 'spec.domain.memory.guest', 'spec.domain.memory.hugepages.pageSize' or 'spec.domain.resources.requests.memory' must be set"
	for _, tc := range []struct {
		mem  string
		want []string
	}{
		{"resources: {requests: {memory: 64Mi}}", nil},
		{"resources: {limits: {memory: 64Mi}}", nil},
		{"memory: {guest: 1Gi}", nil},
		{"memory: {hugepages: {pageSize: 2Mi}}", nil},
		{"resources: {requests: {cpu: 1}}", []string{noMemory}},
		{"memory: {}", []string{noMemory}},
		{"cpu: {cores: 1}", []string{noMemory}},
		// KubeVirt's webhook refuses a positive request below 1M (1000000 bytes) and runs anything above.
		// (Numbers are quoted: YAML numbers decode as floats here, the apiserver's JSON ones as integers.)
		{"resources: {requests: {memory: 4096Ki}}", nil},
		{"resources: {requests: {memory: 1M}}", nil},
		{"resources: {requests: {memory: 512Ki}}", []string{"spec.domain.resources.requests: spec.domain.resources.requests.memory '512Ki': must be greater than or equal to 1M."}},
		{"resources: {requests: {memory: \"999999\"}}", []string{"spec.domain.resources.requests: spec.domain.resources.requests.memory '999999': must be greater than or equal to 1M."}},
		{"resources: {requests: {memory: \"0\"}, limits: {memory: 64Mi}}", nil},
	} {
		_, msgs := a.create(t, strings.Replace(vmiTemplate, "MEM", tc.mem, 1))
		if !reflect.DeepEqual(msgs, tc.want) {
			t.Errorf("%q:\n got  %q\n want %q", tc.mem, msgs, tc.want)
		}
	}
}

// The apiserver persists machine type q35 where a VMI or a VM template has none (KubeVirt's webhooks).
func TestMachineTypeDefault(t *testing.T) {
	machine := func(obj map[string]any, path ...string) any {
		for _, p := range path {
			obj, _ = obj[p].(map[string]any)
		}
		return obj["machine"]
	}
	a := newAPIServer(t, "kubevirt.io_virtualmachineinstances.yaml")
	obj, msgs := a.create(t, strings.Replace(vmiTemplate, "MEM", "resources: {requests: {memory: 64Mi}}", 1))
	if len(msgs) != 0 || !reflect.DeepEqual(machine(obj, "spec", "domain"), map[string]any{"type": "q35"}) {
		t.Errorf("VMI machine %v (%v)", machine(obj, "spec", "domain"), msgs)
	}
	obj, _ = a.create(t, strings.Replace(vmiTemplate, "MEM", "resources: {requests: {memory: 64Mi}}\n    machine: {type: pc-q35-rhel9.6.0}", 1))
	if got := machine(obj, "spec", "domain"); !reflect.DeepEqual(got, map[string]any{"type": "pc-q35-rhel9.6.0"}) {
		t.Errorf("user machine type replaced: %v", got)
	}
	vm := newAPIServer(t, "kubevirt.io_virtualmachines.yaml")
	obj, msgs = vm.create(t, strings.Replace(vmTemplate, "RUN", "runStrategy: Halted", 1))
	if got := machine(obj, "spec", "template", "spec", "domain"); len(msgs) != 0 || !reflect.DeepEqual(got, map[string]any{"type": "q35"}) {
		t.Errorf("VM template machine %v (%v)", got, msgs)
	}
}

func TestQuantityBounded(t *testing.T) {
	a := newAPIServer(t, "kubevirt.io_virtualmachineinstances.yaml")
	for _, tc := range []struct {
		q  string
		ok bool
	}{
		{"64Mi", true}, {"1e9", true}, {"1.5G", true}, {"100000000", true}, {"100", false}, // below 1M
		{"1e-999999999", false}, {"1e1234", false}, {strings.Repeat("1", 65), false},
	} {
		start := time.Now()
		_, msgs := a.create(t, strings.Replace(vmiTemplate, "MEM", "resources: {requests: {memory: \""+tc.q+"\"}}", 1))
		if (len(msgs) == 0) != tc.ok {
			t.Errorf("memory %q: accepted=%v, want %v (%v)", tc.q, len(msgs) == 0, tc.ok, msgs)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("memory %q took %v to validate", tc.q, d)
		}
	}
}
