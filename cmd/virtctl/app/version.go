package app

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/version"

	kvirtversion "github.com/kvirt/kvirt/version"
)

// ClientVersion describes this binary (kvirt's version package).
func ClientVersion() version.Info { return kvirtversion.Get() }

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
