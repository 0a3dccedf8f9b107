package controller

import (
	"context"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// Hooks for the sync-once tests of package controller_test (which share controllertest with the
// integration tests, and so cannot be in this package: controllertest imports it). They reach what a
// sample-controller test reaches in its own package: the informer caches, one sync, the clock.

// SyncVM runs one VM sync of key.
func (c *Controller) SyncVM(ctx context.Context, key string) (time.Duration, error) {
	return c.vm.sync(ctx, key)
}

// SyncVMI runs one VMI sync of key.
func (c *Controller) SyncVMI(ctx context.Context, key string) (time.Duration, error) {
	return c.vmi.sync(ctx, key)
}

// Caches are the informers' stores, which tests fill instead of running the informers.
type Caches struct{ VMs, VMIs, Pods, Secrets, PVCs, Nodes cache.Indexer }

// Caches returns the controller's informer stores.
func (c *Controller) Caches() Caches {
	return Caches{
		VMs:     c.kvFactory.Kubevirt().V1().VirtualMachines().Informer().GetIndexer(),
		VMIs:    c.kvFactory.Kubevirt().V1().VirtualMachineInstances().Informer().GetIndexer(),
		Pods:    c.podInf.GetIndexer(),
		Secrets: c.secretInf.GetIndexer(),
		PVCs:    c.kubeFacts[2].Core().V1().PersistentVolumeClaims().Informer().GetIndexer(),
		Nodes:   c.nodeInf.GetIndexer(),
	}
}

// SetClock fixes both controllers' clock and makes the crash-loop backoff's jitter zero.
func (c *Controller) SetClock(now time.Time) {
	c.vm.now = func() time.Time { return now }
	c.vmi.now = func() time.Time { return now }
	c.vm.jitter = func(int64) int64 { return 0 }
}

// UseFakeRecorder makes both controllers record events into the returned recorder.
func (c *Controller) UseFakeRecorder() *record.FakeRecorder {
	r := record.NewFakeRecorder(100)
	c.vm.recorder, c.vmi.recorder = r, r
	return r
}

// SetLauncherState makes the launcher of VMI key in pod podName have reported s, as a running watcher
// would have cached it (no watch runs).
func (c *Controller) SetLauncherState(key, podName string, s LauncherState) {
	w := c.vmi.watchers
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur := w.byKey[key]; cur != nil {
		cur.cancel()
	}
	w.byKey[key] = &launcherWatcher{ep: LauncherEndpoint{PodName: podName}, cancel: func() {}, state: &s}
}

// WatchedEndpoint returns the endpoint the VMI controller keeps a launcher watcher on for key.
func (c *Controller) WatchedEndpoint(key string) (LauncherEndpoint, bool) {
	w := c.vmi.watchers
	w.mu.Lock()
	defer w.mu.Unlock()
	if lw := w.byKey[key]; lw != nil {
		return lw.ep, true
	}
	return LauncherEndpoint{}, false
}

// StopWatchers ends every launcher watcher a sync started.
func (c *Controller) StopWatchers() { c.vmi.watchers.StopAll() }

// PodExpectations and VMIExpectations are the VMI and VM controllers' expectations.
func (c *Controller) PodExpectations() *Expectations { return c.vmi.podExp }
func (c *Controller) VMIExpectations() *Expectations { return c.vm.exp }

// RenderLauncherPod is renderLauncherPod with the controller's pod configuration.
func (c *Controller) RenderLauncherPod(vmi *v1.VirtualMachineInstance) (*corev1.Pod, error) {
	return renderLauncherPod(vmi, c.vmi.cfg, nil)
}
