package v1

import (
	"crypto/sha1"
	"encoding/hex"

	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

// Object names are DNS subdomains of up to 253 characters, label values at most 63. Wherever a VM or VMI
// name goes into a label value or into the name of another object, it passes through these functions.

// nameHashLength is how many hex digits of the name's SHA-1 a shortened name keeps.
const nameHashLength = 8

// NameLabelValue is name as a label value: the name itself when it fits (63 characters), else its first
// 54 characters, "-" and the first 8 hex digits of the SHA-1 of the whole name. This is KubeVirt's
// CalculateVirtualMachineInstanceID (the value of vmi.kubevirt.io/id on launcher pods); kvirt uses it for
// vm.kubevirt.io/name too (see VirtualMachineNameLabel). Two names sharing a long prefix stay apart, and
// the result is a valid label value for any valid object name (the hash ends it with a letter or digit).
func NameLabelValue(name string) string {
	return shorten(name, k8svalidation.LabelValueMaxLength)
}

// ShortenedName returns prefix+suffix when it is at most max characters long, else prefix cut short with
// "-" and 8 hex digits of the SHA-1 of prefix in between, so that the whole is exactly max characters.
// Names made from a VMI name this way are stable (the same VMI always gets the same name) and distinct
// for distinct VMI names.
func ShortenedName(prefix, suffix string, max int) string {
	if len(prefix)+len(suffix) <= max {
		return prefix + suffix
	}
	return shorten(prefix, max-len(suffix)) + suffix
}

func shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	sum := sha1.Sum([]byte(s))
	return s[:max-nameHashLength-1] + "-" + hex.EncodeToString(sum[:])[:nameHashLength]
}
