package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// The node (`up --node`): one kubelet with containerd and runc, kube-proxy and
// kube-scheduler. Unlike the control plane it needs root and touches the host: a bridge,
// cgroups, iptables rules (kube-proxy's), a few sysctls kubelet rewrites and a few fixed
// paths. Everything it changes is written down in nodeRecordPath before it is changed, so
// that teardown, or the next `up` after a crash, can undo it.
const (
	nodeName = "127.0.0.1" // kubelet's --hostname-override: the API server reaches it there
	// nodeBridge carries the Pods' network; the bed creates it and owns its addresses, which
	// exist only on it and inside the Pods' network namespaces.
	nodeBridge    = "regcred0"
	nodePodCIDR   = "10.213.0.0/24"
	nodeGateway   = "10.213.0.1"
	nodeServiceIP = "10.96.0.1" // the kubernetes Service: first address of the service range
	nodeCNIName   = "regcred-testbed"
	nodeCgroup    = "regcred-testbed" // kubelet's cgroupRoot, in every v1 hierarchy
	// nodeStateDir holds the lock that allows one node per machine (kubelet and containerd
	// use a few fixed paths) and the record of what the running node changed.
	nodeStateDir  = "/run/regcred-testbed"
	nodeCNIBinDir = "/usr/lib/cni"
	nodeTimeout   = 60 * time.Second
	nodeLockWait  = 30 * time.Second // for a bed still tearing its node down
)

// kubeletSysctls are the host settings kubelet rewrites at start (setupKernelTunables).
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// nodeFixedPaths are paths outside the bed's directory that kubelet, containerd or libcni
// create whatever they are told; those that did not exist before are removed afterwards.
var nodeFixedPaths = []string{"/run/containerd", "/var/lib/kubelet", "/var/lib/cni", "/var/log/containers"}

// nodeInfo is testbed.json's "node".
type nodeInfo struct {
	Name        string `json:"name"`        // the Node object's name
	CRIEndpoint string `json:"criEndpoint"` // containerd's CRI socket (for crictl)
	Crictl      string `json:"crictl"`
	PodCIDR     string `json:"podCIDR"`
	Gateway     string `json:"gateway"`    // the bridge's address; the API server is reachable there
	PauseImage  string `json:"pauseImage"` // containerd's sandbox image, imported (never pulled)
	// Image is a private image in the bed's registry whose process stays up: a Pod running
	// it reaches Running only if it was pulled with the registry's credentials.
	Image string `json:"image"`
	// ECRImage is the same image under the ECR registry host; containerd reaches that host
	// at the emulator's registry front (hosts.toml), kubelet matches credentials by its name.
	ECRImage string `json:"ecrImage"`
}

// nodeRecord is what a running node changed on the host (nodeStateDir/node.json).
type nodeRecord struct {
	Dir        string            `json:"dir"`        // the bed's directory
	Containerd string            `json:"containerd"` // its socket: the shims name it
	KubeProxy  string            `json:"kubeProxy"`  // binary for `--cleanup` of its rules
	Sysctls    map[string]string `json:"sysctls"`    // values before kubelet started
	Created    []string          `json:"created"`    // fixed paths that did not exist before
	// Firewalls (iptables, ip6tables) that had no KUBE-FIREWALL chain before: kube-proxy
	// adds it and its --cleanup leaves it.
	KubeFirewall []string `json:"kubeFirewall"`
}

// node is the running node's state inside `up`.
type node struct {
	record    nodeRecord
	lock      *os.File
	forwarder net.Listener
	kubelet   *proc
	info      nodeInfo
	ports     struct{ kubelet, kubeletHealthz, proxyHealthz, proxyMetrics, scheduler int }
}

func (b *bed) nodePath(elem ...string) string {
	return b.path(append([]string{"node"}, elem...)...)
}

// prepareNode checks the host, cleans up after a crashed bed, and creates the bridge, the
// cgroups and the forwarder to the API server. It runs before any process starts.
func (b *bed) prepareNode() error {
	if os.Geteuid() != 0 {
		return exitError{1, "testbed: --node needs root (kubelet, containerd and runc manage cgroups, mounts and network namespaces)"}
	}
	for _, tool := range []struct{ name, pkg string }{
		{"runc", "runc"}, {"iptables", "iptables"}, {"ip", "iproute2"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return exitError{1, fmt.Sprintf("testbed: --node: %s not found in PATH (Debian package %s)", tool.name, tool.pkg)}
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(nodeCNIBinDir, plugin)); err != nil {
			return exitError{1, fmt.Sprintf("testbed: --node: CNI plugin %s/%s missing (Debian package containernetworking-plugins)", nodeCNIBinDir, plugin)}
		}
	}
	for _, name := range nodeBinaries {
		if _, err := os.Stat(filepath.Join(b.bin, name)); err != nil {
			return exitError{1, fmt.Sprintf("testbed: --node: missing binary %s (tests/testbed/build.sh builds it)", filepath.Join(b.bin, name))}
		}
	}
	n := &node{}
	b.node = n
	// containerd looks its shim up in PATH; kubelet and crictl need nothing else from it.
	if err := os.Setenv("PATH", b.bin+":"+os.Getenv("PATH")); err != nil {
		return err
	}
	if err := os.MkdirAll(nodeStateDir, 0o700); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(nodeStateDir, "node.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	// Held until the process exits, so a crash releases it too. A bed whose test process
	// just ended may still be tearing its node down: wait a while for it.
	for waited := time.Duration(0); ; waited += 200 * time.Millisecond {
		err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if waited >= nodeLockWait {
			lock.Close()
			return exitError{1, fmt.Sprintf("testbed: another test bed with a node is running on this machine (%s is locked)",
				lock.Name())}
		}
		if waited == 0 {
			logf("waiting up to %s for another bed's node to go down", nodeLockWait)
		}
		time.Sleep(200 * time.Millisecond)
	}
	n.lock = lock
	if old, err := readNodeRecord(); err == nil {
		logf("cleaning up after a previous bed's node (%s)", old.Dir)
		cleanupNode(old)
	} else if !errors.Is(err, os.ErrNotExist) {
		logf("ignoring %s: %v", nodeRecordPath(), err)
	}

	n.record = nodeRecord{
		Dir:        b.dir,
		Containerd: b.nodePath("containerd", "containerd.sock"),
		KubeProxy:  filepath.Join(b.bin, "kube-proxy"),
		Sysctls:    map[string]string{},
	}
	for _, key := range kubeletSysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", key)); err == nil {
			n.record.Sysctls[key] = strings.TrimSpace(string(v))
		}
	}
	for _, p := range nodeFixedPaths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			n.record.Created = append(n.record.Created, p)
		}
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		if exec.Command(tool, "-w", "-S", "KUBE-FIREWALL").Run() != nil {
			n.record.KubeFirewall = append(n.record.KubeFirewall, tool)
		}
	}
	if err := writeNodeRecord(n.record); err != nil {
		return err
	}

	if err := makeNodeCgroups(); err != nil {
		return fmt.Errorf("creating cgroups for the node: %w", err)
	}
	for _, args := range [][]string{
		{"link", "add", nodeBridge, "type", "bridge"},
		{"addr", "add", nodeGateway + "/24", "dev", nodeBridge},
		{"link", "set", nodeBridge, "up"},
	} {
		if out, err := runTool(context.Background(), os.Environ(), "ip", args...); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return b.startForwarder()
}

// startForwarder relays the bridge's gateway address, at the API server's port, to the
// API server on loopback. Pods reach the kubernetes Service there (kube-proxy DNATs
// 10.96.0.1:443 to the advertised address); 127.0.0.1 inside a Pod is the Pod's own.
func (b *bed) startForwarder() error {
	addr := net.JoinHostPort(nodeGateway, fmt.Sprint(b.ports.apiserver))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s for the API server: %w", addr, err)
	}
	b.node.forwarder = l
	target := net.JoinHostPort("127.0.0.1", fmt.Sprint(b.ports.apiserver))
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				done := make(chan struct{}, 2)
				relay := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, src)
					if c, ok := dst.(*net.TCPConn); ok {
						_ = c.CloseWrite()
					}
					done <- struct{}{}
				}
				go relay(out, in)
				go relay(in, out)
				<-done
				<-done
			}()
		}
	}()
	return nil
}

// launchNodeRuntime picks the node's ports and starts containerd, which needs nothing
// from the control plane.
func (b *bed) launchNodeRuntime() (*proc, error) {
	return b.launchContainerd()
}

// pickNodePorts picks the node's ports, none of them one the bed already gave out (those
// were released, so the kernel may hand them out again).
func (b *bed) pickNodePorts() error {
	taken := map[int]bool{}
	for _, p := range []int{b.ports.etcdClient, b.ports.etcdPeer, b.ports.apiserver,
		b.ports.controllerManager, b.ports.registry, b.ports.awsAPI, b.ports.awsControl, b.ports.awsFront} {
		taken[p] = true
	}
	var ports []int
	for len(ports) < 5 {
		more, err := freePorts(8)
		if err != nil {
			return fmt.Errorf("finding free ports: %w", err)
		}
		for _, p := range more {
			if !taken[p] && len(ports) < 5 {
				taken[p] = true
				ports = append(ports, p)
			}
		}
	}
	n := b.node
	n.ports.kubelet, n.ports.kubeletHealthz, n.ports.proxyHealthz = ports[0], ports[1], ports[2]
	n.ports.proxyMetrics, n.ports.scheduler = ports[3], ports[4]
	return nil
}

// startNodeAgents runs once the API server is ready and the registry holds the images:
// it imports the pause image, starts kubelet, kube-proxy and kube-scheduler, and waits
// until the Node is Ready and both have synced.
func (b *bed) startNodeAgents(ctx context.Context, containerd *proc) error {
	if err := b.awaitContainerd(ctx, containerd); err != nil {
		return err
	}
	if err := b.importPauseImage(ctx); err != nil {
		return &startupError{"containerd", containerd.logPath, "did not import the pause image: " + oneLine(err.Error())}
	}
	logf("containerd is ready; imported %s", b.node.info.PauseImage)
	for _, binding := range []struct{ name, role, user string }{
		{"node", "system:node", "system:node:" + nodeName},
		{"kubelet-api", "system:kubelet-api-admin", apiserverKubeletClientUser},
	} {
		if err := b.bindClusterRole("regcred-testbed:"+binding.name, binding.role, binding.user); err != nil {
			return err
		}
	}
	certs, err := b.issueNodeCerts()
	if err != nil {
		return err
	}
	kubelet, err := b.launchKubelet(certs)
	if err != nil {
		return err
	}
	b.node.kubelet = kubelet
	proxy, err := b.launchKubeProxy(certs)
	if err != nil {
		return err
	}
	scheduler, err := b.launchScheduler(certs)
	if err != nil {
		return err
	}
	if err := b.awaitKubelet(ctx, kubelet); err != nil {
		return err
	}
	// kubelet has rewritten them by the time the Node is Ready; the bed needs none of them.
	restoreSysctls(b.node.record.Sysctls)
	logf("kubelet is ready: Node %s", nodeName)
	if err := b.awaitKubeProxy(ctx, proxy); err != nil {
		return err
	}
	logf("kube-proxy is ready")
	if err := b.awaitScheduler(ctx, scheduler); err != nil {
		return err
	}
	logf("kube-scheduler is ready")
	b.node.info.Name = nodeName
	b.node.info.CRIEndpoint = "unix://" + b.node.record.Containerd
	b.node.info.Crictl = filepath.Join(b.bin, "crictl")
	b.node.info.PodCIDR = nodePodCIDR
	b.node.info.Gateway = nodeGateway
	return nil
}

// stopAll stops every child; with a node, first kubelet, then every Pod (so containerd
// removes their containers, mounts and network namespaces), and undoes what the node
// changed on the host.
func (b *bed) stopAll() {
	n := b.node
	if n == nil {
		b.sup.stopAll()
		return
	}
	if n.kubelet != nil {
		n.kubelet.stop()
	}
	if sock := n.record.Containerd; sock != "" {
		if _, err := os.Stat(sock); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := runTool(ctx, os.Environ(), filepath.Join(b.bin, "crictl"),
				"--runtime-endpoint", "unix://"+sock, "rmp", "--all", "--force")
			cancel()
			if err != nil {
				logf("crictl rmp --all: %v: %s", err, oneLine(string(out)))
			}
		}
	}
	b.sup.stopAll()
	if n.forwarder != nil {
		n.forwarder.Close()
	}
	if n.record.Dir != "" {
		cleanupNode(n.record)
	}
}

// cleanupNode undoes what a node changed, whether it stopped cleanly or crashed: leftover
// processes, mounts, cgroups, the bridge, kube-proxy's rules, sysctls and fixed paths.
func cleanupNode(rec nodeRecord) {
	// Shims outlive containerd; containers outlive their shim.
	killShims(rec.Containerd)
	killCgroupProcs()
	unmountUnder(rec.Dir)
	removeNodeCgroups()
	if out, err := exec.Command("ip", "link", "del", nodeBridge).CombinedOutput(); err != nil &&
		!strings.Contains(string(out), "Cannot find device") {
		logf("ip link del %s: %v: %s", nodeBridge, err, oneLine(string(out)))
	}
	if rec.KubeProxy != "" {
		if _, err := os.Stat(rec.KubeProxy); err == nil {
			cmd := exec.Command(rec.KubeProxy, "--cleanup")
			cmd.SysProcAttr = childAttr()
			if out, err := cmd.CombinedOutput(); err != nil {
				logf("kube-proxy --cleanup: %v: %s", err, oneLine(logTailOf(string(out), 3)))
			}
		}
	}
	for _, tool := range rec.KubeFirewall {
		for _, args := range [][]string{
			{"-D", "INPUT", "-j", "KUBE-FIREWALL"}, {"-D", "OUTPUT", "-j", "KUBE-FIREWALL"},
			{"-F", "KUBE-FIREWALL"}, {"-X", "KUBE-FIREWALL"},
		} {
			_ = exec.Command(tool, append([]string{"-w"}, args...)...).Run()
		}
	}
	restoreSysctls(rec.Sysctls)
	// libcni's cache names the network; host-local's data is under the bed's directory.
	if matches, _ := filepath.Glob("/var/lib/cni/results/" + nodeCNIName + "-*"); matches != nil {
		for _, m := range matches {
			os.Remove(m)
		}
	}
	for _, p := range rec.Created {
		unmountUnder(p)
		if err := os.RemoveAll(p); err != nil {
			logf("could not remove %s: %v", p, err)
		}
	}
	os.Remove(nodeRecordPath())
}

// killShims kills the runc shims serving the containerd at socket address sock.
func killShims(sock string) {
	if sock == "" {
		return
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == sock {
				var pid int
				fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// cgroupHierarchies lists the v1 hierarchies (cgroup v1 only: kubelet's failCgroupV1 is off).
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "unified" {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return out
}

// makeNodeCgroups creates kubelet's cgroupRoot in every hierarchy (kubelet wants it in all).
func makeNodeCgroups() error {
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, nodeCgroup)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if filepath.Base(h) == "cpuset" {
			// A new cpuset is empty: give it the parent's CPUs and memory nodes.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// nodeCgroupDirs lists the node's cgroups, deepest first.
func nodeCgroupDirs() []string {
	var dirs []string
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, nodeCgroup), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

// killCgroupProcs kills whatever still runs in the node's cgroups (containers whose shim
// is gone).
func killCgroupProcs() {
	for range 20 {
		found := false
		for _, d := range nodeCgroupDirs() {
			data, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(data)) {
				var pid int
				if _, err := fmt.Sscanf(f, "%d", &pid); err == nil && pid > 0 {
					found = true
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if !found {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func removeNodeCgroups() {
	for range 20 {
		left := 0
		for _, d := range nodeCgroupDirs() {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				left++
			}
		}
		if left == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	logf("could not remove every cgroup under %s", nodeCgroup)
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	if dir == "" {
		return
	}
	for range 5 {
		data, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return
		}
		var points []string
		for _, line := range strings.Split(string(data), "\n") {
			fields := strings.Fields(line)
			if len(fields) < 5 {
				continue
			}
			p := unescapeMountPath(fields[4])
			if p == dir || strings.HasPrefix(p, dir+"/") {
				points = append(points, p)
			}
		}
		if len(points) == 0 {
			return
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		for _, p := range points {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
		}
	}
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space, etc.).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &c); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func restoreSysctls(values map[string]string) {
	for key, v := range values {
		path := filepath.Join("/proc/sys", key)
		if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == v {
			continue
		}
		if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
			logf("could not restore %s: %v", key, err)
		}
	}
}

func nodeRecordPath() string { return filepath.Join(nodeStateDir, "node.json") }

func readNodeRecord() (nodeRecord, error) {
	var rec nodeRecord
	data, err := os.ReadFile(nodeRecordPath())
	if err != nil {
		return rec, err
	}
	return rec, json.Unmarshal(data, &rec)
}

func writeNodeRecord(rec nodeRecord) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(nodeRecordPath(), data, 0o600)
}

// logTailOf returns the last n lines of text.
func logTailOf(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The hooks up.go calls at each stage of start-up; without --node they do nothing.

func (b *bed) nodeBeforeStart() error {
	if !b.withNode {
		return nil
	}
	if err := b.prepareNode(); err != nil {
		return err
	}
	if err := b.pickNodePorts(); err != nil {
		return err
	}
	return b.prepareNodeCerts()
}

func (b *bed) nodeLaunchRuntime() (*proc, error) {
	if !b.withNode {
		return nil, nil
	}
	return b.launchNodeRuntime()
}

func (b *bed) nodeBuildImages(ctx context.Context) error {
	if !b.withNode {
		return nil
	}
	if err := b.buildNodeImages(ctx); err != nil {
		return fmt.Errorf("building the node's images: %w", err)
	}
	logf("pushed %s", b.node.info.Image)
	return nil
}

func (b *bed) nodeStart(ctx context.Context, containerd *proc) error {
	if !b.withNode {
		return nil
	}
	return b.startNodeAgents(ctx, containerd)
}
