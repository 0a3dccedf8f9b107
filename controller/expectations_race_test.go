package controller

import (
	"context"
	"sync/atomic"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// A launcher pod the VMI controller created lands in the informer cache, and satisfies the creation
// expectation, while a later sync of the same VMI is between reading the pod cache and acting (here:
// during its finalizer patch). That sync must not create a second pod: two launchers would run the same
// VMI on the same disks. CI saw it once as TestFakeStartStrategyPaused creating two pods 8 ms apart.
func TestVMISyncDoesNotCreateSecondPodWhenCreationLandsMidSync(t *testing.T) {
	e, _ := newFake(t, false) // not running: this test plays the informers' part
	c := e.c.vmi
	ctx := context.Background()
	vmi, err := e.kv.KubevirtV1().VirtualMachineInstances("default").Create(ctx, &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "race", Namespace: "default"},
		Spec:       testVM("race", v1.RunStrategyAlways).Spec.Template.Spec,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.kvFactory.Kubevirt().V1().VirtualMachineInstances().Informer().GetIndexer().Add(vmi); err != nil {
		t.Fatal(err)
	}
	// An earlier sync created the pod; its add event has not been handled yet.
	key := "default/race"
	c.podExp.ExpectCreations(key, 1)
	pod, err := renderLauncherPod(vmi, c.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pod, err = e.kube.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The event arrives while this sync patches the VMI's finalizer.
	var delivered atomic.Bool
	e.kv.PrependReactor("patch", "virtualmachineinstances", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !delivered.Swap(true) {
			if err := e.c.podInf.GetIndexer().Add(pod); err != nil {
				t.Error(err)
			}
			c.podExp.CreationObserved(key)
		}
		return false, nil, nil
	})
	if _, err := c.sync(ctx, key); err != nil {
		t.Fatal(err)
	}
	if !delivered.Load() {
		t.Fatal("the sync did not patch the finalizer; the test no longer exercises the race")
	}
	pods, err := e.kube.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
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
	e, _ := newFake(t, false)
	c := e.c.vm
	ctx := context.Background()
	vm, err := e.kv.KubevirtV1().VirtualMachines("default").Create(ctx, testVM("race", v1.RunStrategyAlways), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.kvFactory.Kubevirt().V1().VirtualMachines().Informer().GetIndexer().Add(vm); err != nil {
		t.Fatal(err)
	}
	key := "default/race"
	c.exp.ExpectCreations(key, 1)
	vmi, err := e.kv.KubevirtV1().VirtualMachineInstances("default").Create(ctx, &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "race", Namespace: "default",
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1.VirtualMachineGroupVersionKind)}},
		Spec: vm.Spec.Template.Spec,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var delivered atomic.Bool
	e.kv.PrependReactor("patch", "virtualmachines", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !delivered.Swap(true) {
			if err := e.c.kvFactory.Kubevirt().V1().VirtualMachineInstances().Informer().GetIndexer().Add(vmi); err != nil {
				t.Error(err)
			}
			c.exp.CreationObserved(key)
		}
		return false, nil, nil
	})
	var creates atomic.Int32
	e.kv.PrependReactor("create", "virtualmachineinstances", func(k8stesting.Action) (bool, runtime.Object, error) {
		creates.Add(1)
		return false, nil, nil
	})
	_, _ = c.sync(ctx, key) // the status write may conflict with our patch; only the create matters
	if !delivered.Load() {
		t.Fatal("the sync did not patch the VM; the test no longer exercises the race")
	}
	if n := creates.Load(); n != 0 {
		t.Fatalf("the sync tried to create the VMI %d more time(s) although its creation was observed", n)
	}
}
