package controller_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller/controllertest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// A launcher pod the VMI controller created lands in the informer cache, and satisfies the creation
// expectation, while a later sync of the same VMI is between reading the pod cache and acting (here:
// during its finalizer patch). That sync must not create a second pod: two launchers would run the same
// VMI on the same disks. CI saw it once as TestFakeStartStrategyPaused creating two pods 8 ms apart.
func TestVMISyncDoesNotCreateSecondPodWhenCreationLandsMidSync(t *testing.T) {
	f := newFixture(t, false) // not running: this test plays the informers' part
	ctx := context.Background()
	vmi := f.addVMI(controllertest.VMI("race"))
	// An earlier sync created the pod; its add event has not been handled yet.
	key := ns + "/race"
	f.c.PodExpectations().ExpectCreations(key, 1)
	pod, err := f.c.RenderLauncherPod(vmi)
	if err != nil {
		t.Fatal(err)
	}
	pod, err = f.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The event arrives while this sync patches the VMI's finalizer.
	var delivered atomic.Bool
	f.kv.PrependReactor("patch", "virtualmachineinstances", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !delivered.Swap(true) {
			if err := f.caches.Pods.Add(pod); err != nil {
				t.Error(err)
			}
			f.c.PodExpectations().CreationObserved(key)
		}
		return false, nil, nil
	})
	if _, err := f.c.SyncVMI(ctx, key); err != nil {
		t.Fatal(err)
	}
	if !delivered.Load() {
		t.Fatal("the sync did not patch the finalizer; the test no longer exercises the race")
	}
	pods, err := f.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		names := []string{}
		for _, p := range pods.Items {
			names = append(names, p.Name)
		}
		t.Fatalf("%d launcher pods for one VMI (%v), want 1", len(pods.Items), names)
	}
}

// The VM controller reads its VMI from the cache the same way: a VMI it created and whose add event is
// handled while a later sync patches the VM (finalizer, firmware UUID) must not be created again.
func TestVMSyncDoesNotCreateVMIAgainWhenCreationLandsMidSync(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	vm := f.addVM(controllertest.VM("race", v1.RunStrategyAlways))
	key := ns + "/race"
	f.c.VMIExpectations().ExpectCreations(key, 1)
	vmi, err := f.kv.KubevirtV1().VirtualMachineInstances(ns).Create(ctx, vmiOf(vm, v1.VmPhaseUnset, false), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var delivered atomic.Bool
	f.kv.PrependReactor("patch", "virtualmachines", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !delivered.Swap(true) {
			if err := f.caches.VMIs.Add(vmi); err != nil {
				t.Error(err)
			}
			f.c.VMIExpectations().CreationObserved(key)
		}
		return false, nil, nil
	})
	_, _ = f.sync("vm", "race") // the status write may conflict with our patch; only the create matters
	if !delivered.Load() {
		t.Fatal("the sync did not patch the VM; the test no longer exercises the race")
	}
	if slices.Contains(f.actions(), "create virtualmachineinstances") {
		t.Fatalf("the sync tried to create the VMI again although its creation was observed: %q", f.actions())
	}
}
