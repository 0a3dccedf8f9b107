package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kvirt/kvirt/api/client/clientset/versioned"
	"github.com/kvirt/kvirt/lifecycle"
)

// Options wires a virtctl command to its environment. The zero value of every field but the streams
// means "the real thing"; tests replace Connect or Exec.
type Options struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// Name is the command as the user typed it, shown in help and examples: "virtctl" or "kubectl virt".
	Name string
	// Connect builds the API clients from the kubeconfig flags; nil means Connect (kubectl's rules).
	Connect func(*genericclioptions.ConfigFlags) (*Clients, error)
	// Exec runs commands in pods; nil means SPDY exec through the apiserver with the user's credentials.
	Exec lifecycle.Executor

	// BeforeApply, when set, runs after start/stop/restart have read the VM and decided, before they
	// write. Tests use it to race a concurrent request deterministically.
	BeforeApply func()
}

// Clients are the API clients of one invocation, for the namespace chosen by -n or the kubeconfig.
type Clients struct {
	Namespace string
	Config    *rest.Config
	Kubevirt  versioned.Interface
	Kube      kubernetes.Interface
	// Dynamic reads and writes objects untyped, keeping fields kvirt's types do not model (rename).
	Dynamic dynamic.Interface
}

// Connect builds Clients like kubectl does: --kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster,
// --context, -n/--namespace and the other kubectl connection flags.
func Connect(flags *genericclioptions.ConfigFlags) (*Clients, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("cannot load the kubeconfig (check --kubeconfig, KUBECONFIG or --context): %w", err)
	}
	ns, _, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("cannot determine the namespace (pass -n NAMESPACE): %w", err)
	}
	kv, err := versioned.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot obtain KubeVirt client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot obtain Kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot obtain dynamic client: %w", err)
	}
	return &Clients{Namespace: ns, Config: cfg, Kubevirt: kv, Kube: kube, Dynamic: dyn}, nil
}

// Main runs virtctl with the process's arguments and streams and returns the exit status. Invoked as
// kubectl-virt (a kubectl plugin) it names itself "kubectl virt".
func Main() int {
	// client-go reports some stream errors through klog (runtime.HandleError), which would print log
	// lines into a raw console; virtctl reports every error it acts on itself.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	name := "virtctl"
	if base := filepath.Base(os.Args[0]); strings.HasPrefix(base, "kubectl-virt") {
		name = "kubectl virt"
	}
	return Run(ctx, os.Args[1:], Options{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr, Name: name})
}

// Run executes one virtctl command line and returns the exit status: 0 on success, 1 on any error (the
// error text alone goes to ErrOut, as KubeVirt's virtctl prints it).
func Run(ctx context.Context, args []string, o Options) int {
	cmd := NewCommand(o)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), strings.TrimSpace(err.Error()))
		return 1
	}
	return 0
}

// env is the state shared by the subcommands of one invocation.
type env struct {
	Options
	flags   *genericclioptions.ConfigFlags
	clients *Clients
}

func (e *env) connect() (*Clients, error) {
	if e.clients != nil {
		return e.clients, nil
	}
	connect := e.Connect
	if connect == nil {
		connect = Connect
	}
	c, err := connect(e.flags)
	if err != nil {
		return nil, err
	}
	e.clients = c
	return c, nil
}

func (e *env) executor(c *Clients) lifecycle.Executor {
	if e.Exec != nil {
		return e.Exec
	}
	return lifecycle.NewSPDYExecutor(c.Config, c.Kube)
}

// NewCommand builds the root command with every verb.
func NewCommand(o Options) *cobra.Command {
	if o.Name == "" {
		o.Name = "virtctl"
	}
	if o.In == nil {
		o.In = os.Stdin
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.ErrOut == nil {
		o.ErrOut = os.Stderr
	}
	e := &env{Options: o, flags: genericclioptions.NewConfigFlags(true)}
	// API warnings (e.g. "spec.running is deprecated, please use spec.runStrategy instead." from kvirt's
	// admission policy) are printed as kubectl prints them, once each, instead of as klog lines.
	e.flags.WrapConfigFn = func(c *rest.Config) *rest.Config {
		c.WarningHandler = rest.NewWarningWriter(o.ErrOut, rest.WarningWriterOptions{Deduplicate: true})
		return c
	}
	root := &cobra.Command{
		Use:   "virtctl",
		Short: "virtctl controls virtual machine related operations on your kubernetes cluster.",
		Long: `virtctl drives kvirt (KubeVirt-compatible) virtual machines: start, stop, restart, pause,
unpause, console, expose, rename. It reads the same kubeconfig as kubectl.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: o.Name},
	}
	root.SetIn(o.In)
	root.SetOut(o.Out)
	root.SetErr(o.ErrOut)
	e.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newStartCommand(e), newStopCommand(e), newRestartCommand(e),
		newPauseCommand(e, verbPause), newPauseCommand(e, verbUnpause),
		newConsoleCommand(e), newExposeCommand(e), newRenameCommand(e), newVersionCommand(e),
	)
	return root
}

// example renders an example with the command name the user invoked.
func (e *env) example(lines ...string) string {
	var b strings.Builder
	for i, l := range lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		if l != "" {
			b.WriteString("  ")
			b.WriteString(strings.ReplaceAll(l, "{{virtctl}}", e.Name))
		}
	}
	return b.String()
}
