// Package version says which kvirt a binary is: virtctl's client version and virt-api's
// GET /apis/subresources.kubevirt.io/v1/version both report it.
package version

import (
	"runtime"
	"runtime/debug"

	"k8s.io/apimachinery/pkg/version"
)

// gitVersion may be set at link time: -ldflags "-X github.com/kvirt/kvirt/version.gitVersion=v0.1.0".
var gitVersion = ""

// Get describes this binary, from the link-time version and the Go build information (module version,
// VCS revision, time and state). Without either it reports v0.0.0-dev.
func Get() version.Info {
	info := version.Info{
		GitVersion: gitVersion,
		GoVersion:  runtime.Version(),
		Compiler:   runtime.Compiler,
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.GitVersion == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.GitVersion = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.GitCommit = s.Value
			case "vcs.time":
				info.BuildDate = s.Value
			case "vcs.modified":
				info.GitTreeState = "clean"
				if s.Value == "true" {
					info.GitTreeState = "dirty"
				}
			}
		}
	}
	if info.GitVersion == "" {
		info.GitVersion = "v0.0.0-dev"
	}
	return info
}
