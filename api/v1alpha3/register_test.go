package v1alpha3

import (
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

func TestDecodeV1alpha3(t *testing.T) {
	s := runtime.NewScheme()
	if err := v1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	obj, gvk, err := serializer.NewCodecFactory(s).UniversalDeserializer().Decode(
		[]byte(`{"apiVersion":"kubevirt.io/v1alpha3","kind":"VirtualMachine","metadata":{"name":"a"},"spec":{"runStrategy":"Manual"}}`), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm, ok := obj.(*v1.VirtualMachine)
	if !ok || gvk.Version != "v1alpha3" || vm.Name != "a" || *vm.Spec.RunStrategy != v1.RunStrategyManual {
		t.Fatalf("decoded %T %v %+v", obj, gvk, obj)
	}
}
