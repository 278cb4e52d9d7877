package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// containerdConfig is containerd's config (version 4). Every path is under the bed's
// directory but the shims' socket directory (/run/containerd/s, fixed in the shim).
// restrict_oom_score_adj: runc cannot lower oom_score_adj here (no CAP_SYS_RESOURCE), and
// without it every sandbox fails with "can't get final child's PID from pipe".
const containerdConfig = `version = 4
root = %[1]q
state = %[2]q
temp = %[3]q
# Nothing from the machine's /etc/containerd.
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[debug]
  level = "info"

[plugins.'io.containerd.server.v1.grpc']
  address = %[4]q

[plugins.'io.containerd.server.v1.ttrpc']
  address = %[5]q

[plugins.'io.containerd.internal.v1.opt']
  path = %[6]q

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = %[7]q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[8]q
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %[9]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %[10]q
        Root = %[11]q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[12]q]
    conf_dir = %[13]q
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`

// launchContainerd writes containerd's config, the CNI network and the registry host
// configs, and starts containerd. It finds its shim in PATH, which starts with --bin.
func (b *bed) launchContainerd() (*proc, error) {
	dir := b.nodePath("containerd")
	for _, d := range []string{"root", "state", "tmp", "opt", "verifiers", "certs.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o711); err != nil {
			return nil, err
		}
	}
	runc, err := lookPathAbs("runc")
	if err != nil {
		return nil, err
	}
	b.node.info.PauseImage = pauseImageRef
	cniDir := b.nodePath("cni", "net.d")
	config := fmt.Sprintf(containerdConfig,
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "tmp"),
		b.node.record.Containerd, b.node.record.Containerd+".ttrpc",
		filepath.Join(dir, "opt"), filepath.Join(dir, "verifiers"),
		pauseImageRef, filepath.Join(dir, "certs.d"),
		runc, b.nodePath("runc"), nodeCNIBinDir, cniDir)
	configPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	if err := b.writeCNIConfig(cniDir); err != nil {
		return nil, err
	}
	if err := b.writeRegistryHosts(filepath.Join(dir, "certs.d")); err != nil {
		return nil, err
	}
	return b.start("containerd", []string{"--config", configPath})
}

// writeCNIConfig writes the Pods' network: a bridge the bed created (it owns the gateway
// address, so the plugin neither assigns it nor turns on IP forwarding), no masquerading,
// and host-local addresses kept under the bed's directory.
func (b *bed) writeCNIConfig(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       nodeCNIName,
		"plugins": []any{map[string]any{
			"type":      "bridge",
			"bridge":    nodeBridge,
			"isGateway": false,
			"ipMasq":    false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  []any{[]any{map[string]any{"subnet": nodePodCIDR, "gateway": nodeGateway}}},
				"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
				"dataDir": b.nodePath("cni", "ipam"),
			},
		}},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "10-"+nodeCNIName+".conflist"), data, 0o644)
}

// writeRegistryHosts tells containerd to trust the bed's CA for the bed's registry, and to
// reach the ECR registry host, which does not resolve here, at the emulator's front.
// Image names (and so kubelet's choice of credentials) keep the ECR host; kubelet passes
// credentials without a server address, so containerd offers them to the front.
func (b *bed) writeRegistryHosts(dir string) error {
	hosts := map[string]string{
		b.registry.Host:   b.registry.Host,
		b.aws.ECRRegistry: b.aws.Front,
	}
	for name, addr := range hosts {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		text := fmt.Sprintf("# Written by testbed up --node.\nserver = %q\nca = %q\n",
			"https://"+addr, b.pki.caCert)
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// awaitContainerd waits until containerd answers on its CRI socket.
func (b *bed) awaitContainerd(ctx context.Context, p *proc) error {
	return waitReady(ctx, p, nodeTimeout, func() error {
		out, err := runTool(ctx, os.Environ(), filepath.Join(b.bin, "crictl"),
			"--runtime-endpoint", "unix://"+b.node.record.Containerd, "--timeout", "2s", "version")
		if err != nil {
			return fmt.Errorf("crictl version: %v: %s", err, oneLine(string(out)))
		}
		return nil
	})
}

func lookPathAbs(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	return filepath.Abs(p)
}
