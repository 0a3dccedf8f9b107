package app

import (
	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kvirt/kvirt/api/v1"
)

// The discovery documents of subresources.kubevirt.io. The aggregator serves /apis/subresources.kubevirt.io
// itself from the APIService; virt-api serves the group in its own /apis (legacy and aggregated form, so
// the aggregator's merged discovery lists the subresources) and the version's resource list, as KubeVirt's
// virt-api does: names "virtualmachines/start" etc., namespaced, without verbs or kinds.

// apiGroup is the group as /apis lists it.
func apiGroup() metav1.APIGroup {
	gv := metav1.GroupVersionForDiscovery{GroupVersion: GroupVersion, Version: "v1"}
	return metav1.APIGroup{
		TypeMeta:         metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
		Name:             v1.SubresourceGroupName,
		Versions:         []metav1.GroupVersionForDiscovery{gv},
		PreferredVersion: gv,
	}
}

// resourceList is GET /apis/subresources.kubevirt.io/v1.
func resourceList() metav1.APIResourceList {
	l := metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: GroupVersion,
	}
	for _, s := range vmiSubresources {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: "virtualmachineinstances/" + s, Namespaced: true})
	}
	for _, s := range vmSubresources {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: "virtualmachines/" + s, Namespaced: true})
	}
	return l
}

// aggregatedVersion is the version in the aggregated discovery document (apidiscovery.k8s.io/v2). Each
// subresource says it answers with a Status (its errors; success has no body) and takes "update" (PUT):
// clients drop subresources without a response kind. The parent resources carry none, so they are not
// listed: they are served by kubevirt.io, not here.
func aggregatedVersion() apidiscoveryv2.APIVersionDiscovery {
	status := &metav1.GroupVersionKind{Group: "", Version: "v1", Kind: "Status"}
	subs := func(names []string) []apidiscoveryv2.APISubresourceDiscovery {
		var out []apidiscoveryv2.APISubresourceDiscovery
		for _, n := range names {
			out = append(out, apidiscoveryv2.APISubresourceDiscovery{Subresource: n, ResponseKind: status, Verbs: []string{"update"}})
		}
		return out
	}
	return apidiscoveryv2.APIVersionDiscovery{
		Version: "v1",
		Resources: []apidiscoveryv2.APIResourceDiscovery{
			{Resource: "virtualmachineinstances", Scope: apidiscoveryv2.ScopeNamespace, Subresources: subs(vmiSubresources)},
			{Resource: "virtualmachines", Scope: apidiscoveryv2.ScopeNamespace, Subresources: subs(vmSubresources)},
		},
		Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent,
	}
}
