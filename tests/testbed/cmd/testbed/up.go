package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// kubeBinaries are the binaries `up` expects in --bin (aws-emulator is a script).
var kubeBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl", awsEmulatorBinary}

// bed is one running test bed: its directory, children and everything tests need to know.
type bed struct {
	dir, bin, logDir string
	pki              *pki
	sup              *supervisor
	admin            *http.Client // authenticates as regcred-admin (system:masters)
	ports            struct {
		etcdClient, etcdPeer, apiserver, controllerManager, registry int
		awsAPI, awsControl, awsFront                                 int
	}
	etcdURL    string
	server     string
	auditLog   string
	kubeconfig string
	k8sVersion string
	registry   registryInfo
	aws        awsInfo
	withNode   bool  // --node
	node       *node // the node's state once prepareNode has run (node.go)
}

func (b *bed) path(elem ...string) string {
	return filepath.Join(append([]string{b.dir}, elem...)...)
}

// start starts one of the Kubernetes binaries from --bin.
func (b *bed) start(name string, args []string) (*proc, error) {
	return b.startBinary(name, filepath.Join(b.bin, name), args)
}

func (b *bed) startBinary(name, bin string, args []string) (*proc, error) {
	logPath := filepath.Join(b.logDir, name+".log")
	p, err := b.sup.start(name, bin, args, logPath)
	if err != nil {
		return nil, &startupError{name, logPath, err.Error()}
	}
	logf("started %s (pid %d)", name, p.pid())
	return p, nil
}

func upCmd(args []string) error {
	fs := newFlagSet("up")
	dir := fs.String("dir", "", "directory for the test bed's state; must be empty or absent")
	bin := fs.String("bin", "", "directory holding etcd, kube-apiserver, kube-controller-manager and kubectl")
	lifeline := fs.Bool("lifeline", false, "also tear down when stdin reaches EOF")
	keep := fs.Bool("keep", false, "keep DIR after teardown")
	withNode := fs.Bool("node", false, "also start a node: containerd, kubelet, kube-proxy and kube-scheduler (needs root)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" || *bin == "" {
		return exitError{2, "testbed up: --dir and --bin are required"}
	}

	// With stdout or stderr a closed pipe, a write would otherwise kill the test bed with
	// SIGPIPE before it could stop its children and clean up.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() { cancel(fmt.Errorf("received %v", <-signals)) }()
	commands := make(chan command)
	if *lifeline {
		// The test kit holds the other end of stdin: EOF means the test process is gone.
		// Lines before that are fault-test commands (see control.go).
		go readCommands(os.Stdin, commands, func() {
			cancel(errors.New("stdin reached EOF (--lifeline)"))
		})
	}

	registryBin, err := checkBinaries(*bin)
	if err != nil {
		return err
	}
	b := &bed{sup: newSupervisor(), withNode: *withNode}
	if b.dir, err = prepareDir(*dir); err != nil {
		return err
	}
	if b.bin, err = filepath.Abs(*bin); err != nil {
		return err
	}
	removeDir := func() {
		if *keep {
			logf("kept %s", b.dir)
			return
		}
		if err := os.RemoveAll(b.dir); err != nil {
			logf("could not remove %s: %v", b.dir, err)
		}
	}

	began := time.Now()
	if err := b.startAll(ctx, registryBin); err != nil {
		b.stopAll()
		if errors.Is(err, errInterrupted) || ctx.Err() != nil {
			removeDir()
			return exitError{1, fmt.Sprintf("testbed: start-up interrupted: %v", context.Cause(ctx))}
		}
		var se *startupError
		if errors.As(err, &se) {
			if tail := logTail(se.logPath, 15); tail != "" {
				fmt.Fprintf(os.Stderr, "testbed: last lines of %s:\n%s\n", se.logPath, tail)
			}
		}
		// Keep the directory: the error names a log file in it.
		logf("left %s for inspection", b.dir)
		if se != nil {
			return exitError{1, se.Error()}
		}
		return err
	}
	manifest, err := b.writeManifest()
	if err != nil {
		b.stopAll()
		logf("left %s for inspection", b.dir)
		return err
	}

	fmt.Printf("ready %s\n", manifest)
	logf("ready in %.1fs: Kubernetes %s at %s, registry at %s, AWS at %s", time.Since(began).Seconds(),
		b.k8sVersion, b.server, b.registry.Host, b.aws.Endpoint)
	logf("kubeconfig: %s", b.kubeconfig)
	logf("for a shell: source %s", b.path("env"))

	for {
		select {
		case <-ctx.Done():
			logf("tearing down: %v", context.Cause(ctx))
			b.stopAll()
			removeDir()
			return nil
		case c := <-commands:
			b.handle(ctx, c)
		case p := <-b.sup.exits:
			if p.expected {
				continue
			}
			logf("%s exited unexpectedly; tearing down", p.name)
			b.stopAll()
			logf("left %s for inspection", b.dir)
			return exitError{1, fmt.Sprintf("testbed: %s exited unexpectedly (%s); log: %s",
				p.name, p.exitStatus(), p.logPath)}
		}
	}
}

// startAll brings the bed up. Processes are started as early as their dependencies allow,
// so the registry set-up overlaps with the API server's (slow) start.
func (b *bed) startAll(ctx context.Context, registryBin string) error {
	b.logDir = b.path("logs")
	if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return err
	}
	if err := b.readK8sVersion(ctx); err != nil {
		return err
	}
	var err error
	if b.pki, err = makePKI(b.path("pki")); err != nil {
		return fmt.Errorf("creating certificates: %w", err)
	}
	if b.admin, err = tlsClient(b.pki.caCert, b.pki.adminCert, b.pki.adminKey); err != nil {
		return err
	}
	ports, err := freePorts(8)
	if err != nil {
		return fmt.Errorf("finding free ports: %w", err)
	}
	b.ports.etcdClient, b.ports.etcdPeer, b.ports.apiserver = ports[0], ports[1], ports[2]
	b.ports.controllerManager, b.ports.registry = ports[3], ports[4]
	b.ports.awsAPI, b.ports.awsControl, b.ports.awsFront = ports[5], ports[6], ports[7]
	if err := b.nodeBeforeStart(); err != nil {
		return err
	}

	etcd, err := b.launchEtcd()
	if err != nil {
		return err
	}
	registry, err := b.launchRegistry(registryBin)
	if err != nil {
		return err
	}
	if err := b.awaitEtcd(ctx, etcd); err != nil {
		return err
	}
	logf("etcd is healthy")
	apiserver, err := b.launchAPIServer()
	if err != nil {
		return err
	}
	// Python's and moto's imports take a while: overlap them with the API server's start.
	aws, err := b.launchAWS()
	if err != nil {
		return err
	}
	containerd, err := b.nodeLaunchRuntime()
	if err != nil {
		return err
	}
	if err := b.awaitRegistry(ctx, registry); err != nil {
		return err
	}
	logf("registry is up; pushed %s", b.registry.Image)
	if err := b.nodeBuildImages(ctx); err != nil {
		return err
	}
	if err := b.awaitAPIServer(ctx, apiserver); err != nil {
		return err
	}
	logf("kube-apiserver is ready")
	b.kubeconfig = b.path("kubeconfig")
	if err := writeKubeconfig(b.kubeconfig, b.server, b.pki.caCert, kubeContext,
		b.pki.adminCert, b.pki.adminKey); err != nil {
		return err
	}
	kcm, err := b.launchControllerManager()
	if err != nil {
		return err
	}
	if err := b.awaitControllerManager(ctx, kcm); err != nil {
		return err
	}
	logf("kube-controller-manager is ready")
	if err := b.awaitAWS(ctx, aws); err != nil {
		return err
	}
	logf("AWS emulator is up: API %s, ECR registry front %s", b.aws.Endpoint, b.aws.Front)
	if err := b.nodeStart(ctx, containerd); err != nil {
		return err
	}
	// A component may have died while the test bed was waiting for another one.
	for _, p := range b.sup.procs {
		if p.exited() {
			return &startupError{p.name, p.logPath, "exited during start-up (" + p.exitStatus() + ")"}
		}
	}
	return nil
}

// checkBinaries fails with a clear message naming the first binary that is missing, and
// returns the registry's path.
func checkBinaries(bin string) (registry string, err error) {
	for _, name := range kubeBinaries {
		path := filepath.Join(bin, name)
		info, err := os.Stat(path)
		if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
			return "", exitError{1, fmt.Sprintf("testbed: missing binary %s (tests/testbed/build.sh builds it)", path)}
		}
	}
	for _, tool := range []struct{ name, pkg string }{
		{"docker-registry", "docker-registry"}, {"skopeo", "skopeo"}, {"umoci", "umoci"},
	} {
		path, err := exec.LookPath(tool.name)
		if err != nil {
			return "", exitError{1, fmt.Sprintf("testbed: missing binary %s: not found in PATH (Debian package %s)", tool.name, tool.pkg)}
		}
		if tool.name == "docker-registry" {
			registry = path
		}
	}
	return registry, nil
}

// prepareDir creates dir, or accepts it if it is an empty directory: the test bed removes
// it afterwards and must never delete anything it did not create.
func prepareDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return abs, os.MkdirAll(abs, 0o755)
	case err != nil:
		return "", fmt.Errorf("--dir %s: %w", abs, err)
	case len(entries) > 0:
		return "", exitError{1, fmt.Sprintf("testbed: --dir %s is not empty", abs)}
	}
	return abs, nil
}
