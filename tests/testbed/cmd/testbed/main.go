// Command testbed starts a real Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager), a real OCI registry and a strict AWS (ECR + STS) emulator as
// native processes on loopback for regcred's end-to-end tests, optionally with a real node
// (kubelet, containerd, runc, kube-proxy, kube-scheduler), and checks image pull secrets
// the way kubelet does.
//
//	testbed up --dir DIR --bin BINDIR [--lifeline] [--keep] [--node]
//	testbed pullcheck --secret FILE --image REF --cert-dir DIR [--map HOST=ADDR]...
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
)

const usage = `usage:
  testbed up --dir DIR --bin BINDIR [--lifeline] [--keep] [--node]
      Start etcd, kube-apiserver, kube-controller-manager, a registry and the AWS emulator
      under DIR, print "ready DIR/testbed.json" on stdout, and run until SIGINT/SIGTERM (or,
      with --lifeline, until stdin reaches EOF). DIR must be empty or absent; it is removed afterwards unless
      --keep (or start-up failed, so its logs can be read). --node (root only) also starts
      containerd, kubelet, kube-proxy and kube-scheduler: one node, 127.0.0.1.
  testbed pullcheck --secret FILE --image REF --cert-dir DIR [--map HOST=ADDR]...
      Pick the credentials from the Secret in FILE (JSON) for REF with kubelet's own matching
      code, and pull REF with skopeo using them. Exit 0 if a pull succeeded. --map pulls
      images named HOST/... from ADDR/... instead (e.g. an ECR host to the AWS emulator's
      registry front), while matching still uses HOST.
`

func init() {
	// Children get Pdeathsig, which fires when the *thread* that forked them exits. Pinning
	// the main goroutine to the main thread, and starting every child from it, ties their
	// lives to the whole process rather than to some runtime thread.
	runtime.LockOSThread()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = upCmd(args)
	case "pullcheck":
		err = pullcheckCmd(args)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "testbed: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			fmt.Fprintln(os.Stderr, ee.msg)
			os.Exit(ee.code)
		}
		fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
		os.Exit(1)
	}
}

// exitError is an error whose message is printed as is, with a chosen exit code.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// newFlagSet returns a flag set that reports usage errors without exiting the process.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	return fs
}

// parseFlags parses args and rejects leftovers, which would otherwise be silently ignored.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		return exitError{2, fmt.Sprintf("testbed %s: %v", fs.Name(), err)}
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Sprintf("testbed %s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}
