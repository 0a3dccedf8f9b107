package app

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/version"
)

// gitVersion may be set at link time: -ldflags "-X github.com/kvirt/kvirt/cmd/virtctl/app.gitVersion=v0.1.0".
var gitVersion = ""

// ClientVersion describes this binary, from the link-time version and the Go build information.
func ClientVersion() version.Info {
	info := version.Info{
		GitVersion:   gitVersion,
		GitTreeState: "",
		GoVersion:    runtime.Version(),
		Compiler:     runtime.Compiler,
		Platform:     runtime.GOOS + "/" + runtime.GOARCH,
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

// The server side of `virtctl version`: kvirt has no virt-api, so the server version is the cluster's
// (kube-apiserver discovery /version), the API every virtctl verb talks to.
func newVersionCommand(e *env) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the client and server version information.",
		Example: e.example("# Print the client and server versions for the current context:", "{{virtctl}} version"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(e.Out, "Client Version: %#v\n", ClientVersion())
			if clientOnly {
				return nil
			}
			c, err := e.connect()
			if err != nil {
				return err
			}
			sv, err := c.Kube.Discovery().ServerVersion()
			if err != nil {
				return fmt.Errorf("could not get the server version (check the kubeconfig, or pass --client): %v", err)
			}
			fmt.Fprintf(e.Out, "Server Version: %#v\n", *sv)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&clientOnly, "client", "c", false, "Client version only (no server required).")
	return cmd
}
