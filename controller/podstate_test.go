package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func waiting(name, reason string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: name + ": " + reason}}}
}

// A containerDisk or kernelBoot image the kubelet cannot pull (an init container of the launcher pod) makes
// the VMI Synchronized=False with the kubelet's reason, as a bad compute image does.
func TestImagePullProblem(t *testing.T) {
	for _, tc := range []struct {
		name       string
		init, main []corev1.ContainerStatus
		want       string
	}{
		{"none", nil, []corev1.ContainerStatus{waiting(LauncherContainerName, "PodInitializing")}, ""},
		{"compute", nil, []corev1.ContainerStatus{waiting(LauncherContainerName, "ErrImagePull")}, "ErrImagePull"},
		{"containerDisk init container", []corev1.ContainerStatus{waiting("volumecontainerdisk", "ImagePullBackOff")}, []corev1.ContainerStatus{waiting(LauncherContainerName, "PodInitializing")}, "ImagePullBackOff"},
		{"kernel-boot init container", []corev1.ContainerStatus{waiting("kernel-boot", "ErrImagePull")}, nil, "ErrImagePull"},
		{"init container crashing is not a pull error", []corev1.ContainerStatus{waiting("volumecontainerdisk", "CrashLoopBackOff")}, nil, ""},
	} {
		p := &corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: tc.init, ContainerStatuses: tc.main}}
		if got, msg := imagePullProblem(p); got != tc.want || (got != "" && msg == "") {
			t.Errorf("%s: imagePullProblem = %q, %q; want %q", tc.name, got, msg, tc.want)
		}
	}
	if got, _ := imagePullProblem(nil); got != "" {
		t.Errorf("nil pod: %q", got)
	}
}
