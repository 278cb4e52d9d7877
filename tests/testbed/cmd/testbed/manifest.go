package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// manifest is DIR/testbed.json: everything a test needs to use the bed.
type manifest struct {
	Kubeconfig           string         `json:"kubeconfig"`
	Server               string         `json:"server"`
	CAFile               string         `json:"caFile"`
	Kubectl              string         `json:"kubectl"`
	Testbed              string         `json:"testbed"`
	LogDir               string         `json:"logDir"`
	AuditLog             string         `json:"auditLog"`
	ServiceAccountIssuer string         `json:"serviceAccountIssuer"`
	K8sVersion           string         `json:"k8sVersion"`
	Registry             registryInfo   `json:"registry"`
	AWS                  awsInfo        `json:"aws"`
	Pids                 map[string]int `json:"pids"`
	Node                 *nodeInfo      `json:"node,omitempty"` // with --node
}

// writeManifest writes DIR/testbed.json and DIR/env and returns the manifest's path.
func (b *bed) writeManifest() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	m := manifest{
		Kubeconfig:           b.kubeconfig,
		Server:               b.server,
		CAFile:               b.pki.caCert,
		Kubectl:              filepath.Join(b.bin, "kubectl"),
		Testbed:              self,
		LogDir:               b.logDir,
		AuditLog:             b.auditLog,
		ServiceAccountIssuer: b.server,
		K8sVersion:           b.k8sVersion,
		Registry:             b.registry,
		AWS:                  b.aws,
		Pids:                 map[string]int{},
	}
	if b.node != nil {
		m.Node = &b.node.info
	}
	for _, p := range b.sup.procs {
		m.Pids[p.name] = p.pid()
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	path := b.path("testbed.json")
	// It holds the registry password and the AWS secret key: readable by the owner only.
	if err := writeFileAtomic(path, append(data, '\n'), 0o600); err != nil {
		return "", err
	}
	env := fmt.Sprintf("export KUBECONFIG=%s\nexport PATH=%s:\"$PATH\"\n",
		shellQuote(b.kubeconfig), shellQuote(b.bin))
	if err := os.WriteFile(b.path("env"), []byte(env), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// readK8sVersion asks kubectl for its version, which is the version of every Kubernetes
// binary in --bin since they are built together.
func (b *bed) readK8sVersion(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	kubectl := filepath.Join(b.bin, "kubectl")
	out, err := runTool(ctx, os.Environ(), kubectl, "version", "--client", "-o", "json")
	if err != nil {
		return fmt.Errorf("%s version: %v: %s", kubectl, err, out)
	}
	var v struct {
		ClientVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"clientVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.ClientVersion.GitVersion == "" {
		return fmt.Errorf("%s version: unexpected output %q", kubectl, out)
	}
	b.k8sVersion = v.ClientVersion.GitVersion
	return nil
}

// writeFileAtomic writes via a temporary file and a rename, so a reader never sees a
// half-written file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
