package controller

import (
	"fmt"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// This file lets the VMI controller notice a lost node (nodeLost in vmidecide.go decides): it caches
// Nodes, finds the launcher pods on a node by an index, and re-syncs their VMIs when a node's readiness
// changes or the node goes away. KubeVirt's node controller (watch/node) does this job there, from
// virt-handler's heartbeat; kvirt has no virt-handler and reads the node's Ready condition instead,
// which the node lifecycle controller turns Unknown once the kubelet's heartbeat Lease runs out.

// podNodeIndex indexes launcher pods by spec.nodeName.
const podNodeIndex = "spec.nodeName"

func indexPodByNode(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{p.Spec.NodeName}, nil
}

// slimNode keeps of a Node only what the controller reads (its name and Ready condition), so the cache
// does not hold every node's images, addresses and managed fields.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // cache.DeletedFinalStateUnknown: its object was slimmed when it was stored
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
		DeletionTimestamp: n.DeletionTimestamp}}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{c}
		}
	}
	return out, nil
}

// watchNodes wires the node informer: the VMIs whose launcher pods run on a node are synced again when
// the node appears, goes away or changes readiness (NotReady since another time).
func (c *VMIController) watchNodes(nodeInf, podInf cache.SharedIndexInformer) error {
	if err := nodeInf.SetTransform(slimNode); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	if err := podInf.AddIndexers(cache.Indexers{podNodeIndex: indexPodByNode}); err != nil {
		return fmt.Errorf("launcher pod index: %w", err)
	}
	c.nodes = corelisters.NewNodeLister(nodeInf.GetIndexer())
	c.podIndex = podInf.GetIndexer()
	_, err := nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueNode,
		UpdateFunc: func(o, n any) {
			on, ok1 := o.(*corev1.Node)
			nn, ok2 := n.(*corev1.Node)
			if !ok1 || !ok2 {
				return
			}
			oldSince, wasNotReady := nodeNotReadySince(on)
			since, notReady := nodeNotReadySince(nn)
			if wasNotReady != notReady || (notReady && !oldSince.Equal(since)) {
				c.enqueueNode(n)
			}
		},
		DeleteFunc: c.enqueueNode,
	})
	return err
}

// enqueueNode queues the VMIs of the launcher pods on node obj.
func (c *VMIController) enqueueNode(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	pods, err := c.podIndex.ByIndex(podNodeIndex, n.Name)
	if err != nil {
		return
	}
	for _, p := range pods {
		c.enqueueOwner(p)
	}
}

// nodeOf returns the node of vmi's launcher, pod's (the pod its status follows) or, with no pod, the
// one its status names, and that Node from the cache (nil: there is no such Node).
func (c *VMIController) nodeOf(vmi *v1.VirtualMachineInstance, pod *corev1.Pod) (string, *corev1.Node, error) {
	name := vmi.Status.NodeName
	if pod != nil {
		name = pod.Spec.NodeName
	}
	if name == "" {
		return "", nil, nil
	}
	n, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return name, nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	return name, n, nil
}
