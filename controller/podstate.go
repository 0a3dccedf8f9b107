package controller

import (
	"cmp"
	"encoding/json"
	"strings"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
)

// This file holds what the VMI controller reads from a launcher pod: predicates over the pod's status
// as the kubelet writes it, and the launcher's last words in its termination message. All are pure.

func podTerminated(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podLive: the pod is neither terminated nor being deleted (a pod the VMI controller may still delete).
func podLive(p *corev1.Pod) bool { return p.DeletionTimestamp == nil && !podTerminated(p) }

// podReady: the pod runs and its launcher container is ready (or the pod is Ready). The readiness gate
// is deliberately ignored here: a paused guest keeps the pod not-Ready but the VMI is still Scheduled.
func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == LauncherContainerName && cs.Ready {
			return true
		}
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// launcherOutcome is what the launcher writes to its termination log (launcher/grace.Outcome):
// {"phase":"Succeeded|Failed","reason":"...","message":"..."}.
type launcherOutcome struct {
	Phase   string `json:"phase"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// terminationMessage returns the launcher container's termination reason and message, if it ended.
// A launcher outcome in the message is unpacked (its reason and message win); anything else (the log
// tail of FallbackToLogsOnError, or the container runtime's reason) is returned as it is.
func terminationMessage(p *corev1.Pod) (reason, msg string, exitCode int32, ok bool) {
	if p == nil {
		return "", "", 0, false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == LauncherContainerName && cs.State.Terminated != nil {
			t := cs.State.Terminated
			reason, msg = t.Reason, t.Message
			var o launcherOutcome
			if err := json.Unmarshal([]byte(strings.TrimSpace(t.Message)), &o); err == nil && o.Phase != "" {
				reason, msg = cmp.Or(o.Reason, reason), o.Message
			}
			return reason, msg, t.ExitCode, true
		}
	}
	return "", "", 0, false
}

// imagePullProblem returns the launcher container's image-pull waiting reason and message, if any.
func imagePullProblem(p *corev1.Pod) (string, string) {
	if p == nil {
		return "", ""
	}
	// The compute container, and the init containers whose images are the VMI's containerDisks and
	// kernelBoot image (pulled by the kubelet, controller/poddisks.go): a typo in a disk image shows as
	// ErrImagePull on the VM just as a bad launcher image does.
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range list {
			if cs.State.Waiting == nil {
				continue
			}
			switch cs.State.Waiting.Reason {
			case v1.ErrImagePullReason, v1.ImagePullBackOffReason:
				return cs.State.Waiting.Reason, cs.State.Waiting.Message
			}
		}
	}
	return "", ""
}
