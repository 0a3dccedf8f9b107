package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs creates (or replaces) the CustomResourceDefinitions in the YAML files and waits until each
// is Established; it fails the test otherwise.
func (cp *ControlPlane) InstallCRDs(t testing.TB, paths ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := InstallCRDs(ctx, cp.Config, paths...); err != nil {
		t.Fatalf("install CRDs: %v", err)
	}
}

// InstallCRDs creates (or replaces) the CustomResourceDefinitions in the YAML files (several documents
// per file allowed; any other kind is an error) and waits until each is Established.
func InstallCRDs(ctx context.Context, cfg *rest.Config, paths ...string) error {
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var names []string
	for _, path := range paths {
		objs, err := readObjects(path)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				return fmt.Errorf("%s: %s %q is not a CustomResourceDefinition", path, o.GetKind(), o.GetName())
			}
			crds := c.Resource(crdResource)
			_, err := crds.Create(ctx, o, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				var cur *unstructured.Unstructured
				if cur, err = crds.Get(ctx, o.GetName(), metav1.GetOptions{}); err == nil {
					o.SetResourceVersion(cur.GetResourceVersion())
					_, err = crds.Update(ctx, o, metav1.UpdateOptions{})
				}
			}
			if err != nil {
				return fmt.Errorf("%s: CRD %s: %w", path, o.GetName(), err)
			}
			names = append(names, o.GetName())
		}
	}
	for _, name := range names {
		if err := waitEstablished(ctx, c, name); err != nil {
			return err
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, c dynamic.Interface, name string) error {
	for {
		o, err := c.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not Established: %v (last get error: %v)", name, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readObjects decodes every non-empty YAML or JSON document of a file.
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}
