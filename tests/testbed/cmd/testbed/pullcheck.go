package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/distribution/reference"
	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/credentialprovider"
	"k8s.io/kubernetes/pkg/credentialprovider/secrets"
	"k8s.io/kubernetes/pkg/util/parsers"
)

const pullTimeout = 60 * time.Second

// pullcheckCmd picks credentials from a Secret with kubelet's own keyring code, then proves
// them by really pulling the image. It never prints a password or anything encoding one.
func pullcheckCmd(args []string) error {
	fs := newFlagSet("pullcheck")
	secretFile := fs.String("secret", "", "file holding a Secret object as JSON (kubectl get secret -o json)")
	image := fs.String("image", "", "image reference to pull")
	certDir := fs.String("cert-dir", "", "directory whose *.crt files are the registry's CAs")
	var maps mapFlag
	fs.Var(&maps, "map", "HOST=ADDR: pull images named HOST/... from ADDR/... (repeatable); "+
		"kubelet's matching still uses HOST")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *secretFile == "" || *image == "" || *certDir == "" {
		return exitError{2, "testbed pullcheck: --secret, --image and --cert-dir are required"}
	}
	data, err := os.ReadFile(*secretFile)
	if err != nil {
		return exitError{1, fmt.Sprintf("pullcheck: %v", err)}
	}
	var secret v1.Secret
	// Decoding errors name positions and types, never values, so they are safe to print.
	if err := json.Unmarshal(data, &secret); err != nil {
		return exitError{1, fmt.Sprintf("pullcheck: %s is not a Secret in JSON: %v", *secretFile, err)}
	}
	secretName := secret.Namespace + "/" + secret.Name

	// Exactly kubelet's steps (pkg/kubelet/images): strip tag and digest, build the keyring
	// from the pod's pull secrets, look the repository up.
	repo, _, _, err := parsers.ParseImageName(*image)
	if err != nil {
		return exitError{1, fmt.Sprintf("pullcheck: %v", err)}
	}
	keyring, err := secrets.MakeDockerKeyring([]v1.Secret{secret}, &credentialprovider.BasicDockerKeyring{})
	if err != nil {
		return exitError{1, fmt.Sprintf("pullcheck: secret %s: kubelet cannot read its docker config: %v", secretName, err)}
	}
	creds, _ := keyring.Lookup(repo)
	if len(creds) == 0 {
		return exitError{1, fmt.Sprintf("pullcheck: no credential in secret %s matches image %s (kubelet's matching)", secretName, *image)}
	}

	entries := secretEntries(secret)
	redact := func(text string) string {
		for _, e := range entries {
			text = scrub(text, e.Username, e.Password)
		}
		return text
	}
	named, err := reference.ParseNormalizedNamed(*image)
	if err != nil {
		return exitError{1, fmt.Sprintf("pullcheck: %v", err)}
	}
	host := reference.Domain(named)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tmp, err := os.MkdirTemp("", "regcred-pullcheck-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// Like kubelet, try each matching credential in order until a pull succeeds.
	var failures []string
	for i, c := range creds {
		server := serverFor(entries, repo, c.AuthConfig)
		out, err := pullWith(ctx, tmp, i, host, maps, c.AuthConfig, *certDir, *image)
		if err == nil {
			fmt.Printf("pulled %s with the credential for %s\n", *image, server)
			return nil
		}
		failures = append(failures, fmt.Sprintf("with the credential for %s: %v: %s",
			server, err, strings.TrimSpace(string(out))))
		if ctx.Err() != nil {
			break
		}
	}
	return exitError{1, redact(fmt.Sprintf("pullcheck: could not pull %s %s", *image, strings.Join(failures, "; ")))}
}

// pullWith copies image into a throw-away OCI layout with skopeo, authenticating with cred
// through a private auth file. With a mapping for the image's host, skopeo pulls from the
// mapped address instead (registries.conf location) and looks the credential up under that
// address, so the auth file holds it under both names.
func pullWith(ctx context.Context, tmp string, attempt int, host string, maps mapFlag,
	cred credentialprovider.AuthConfig, certDir, image string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	home := filepath.Join(tmp, "home")
	servers := []string{host}
	for _, m := range maps {
		if m.host == host {
			servers = append(servers, m.addr)
		}
	}
	authFile, err := writeAuthFile(home, servers, cred.Username, cred.Password)
	if err != nil {
		return nil, err
	}
	defer os.Remove(authFile)
	dest := fmt.Sprintf("oci:%s:x", filepath.Join(tmp, fmt.Sprintf("image-%d", attempt)))
	return runSkopeo(ctx, home, maps, "copy", "--quiet",
		"--src-authfile", authFile, "--src-cert-dir", certDir,
		"docker://"+image, dest)
}

// secretEntry is one registry entry of a Secret's docker config.
type secretEntry struct {
	server string
	credentialprovider.DockerConfigEntry
}

// secretEntries lists the registry entries of the Secret, the same ones kubelet reads.
func secretEntries(s v1.Secret) []secretEntry {
	var cfg credentialprovider.DockerConfig
	switch {
	case s.Type == v1.SecretTypeDockerConfigJson:
		var j credentialprovider.DockerConfigJSON
		if json.Unmarshal(s.Data[v1.DockerConfigJsonKey], &j) == nil {
			cfg = j.Auths
		}
	case s.Type == v1.SecretTypeDockercfg:
		_ = json.Unmarshal(s.Data[v1.DockerConfigKey], &cfg)
	}
	var entries []secretEntry
	for server, e := range cfg {
		entries = append(entries, secretEntry{server, e})
	}
	// Most specific first, as kubelet's keyring orders its index.
	sort.Slice(entries, func(i, j int) bool { return entries[i].server > entries[j].server })
	return entries
}

// serverFor names the Secret entry a matched credential came from: kubelet's keyring
// returns only the credential, so ask it again about each entry on its own.
func serverFor(entries []secretEntry, repo string, cred credentialprovider.AuthConfig) string {
	for _, e := range entries {
		if e.Username != cred.Username || e.Password != cred.Password {
			continue
		}
		single := &credentialprovider.BasicDockerKeyring{}
		single.Add(nil, credentialprovider.DockerConfig{e.server: e.DockerConfigEntry})
		if _, ok := single.Lookup(repo); ok {
			return e.server
		}
	}
	return "an unnamed registry"
}

// mapFlag collects --map HOST=ADDR flags.
type mapFlag []registryMapping

func (m *mapFlag) String() string {
	var parts []string
	for _, e := range *m {
		parts = append(parts, e.host+"="+e.addr)
	}
	return strings.Join(parts, ",")
}

func (m *mapFlag) Set(v string) error {
	host, addr, ok := strings.Cut(v, "=")
	valid := func(s string) bool {
		return s != "" && !strings.ContainsAny(s, "\"\\ \t\n/=") && !strings.Contains(s, "://")
	}
	if !ok || !valid(host) || !valid(addr) {
		return fmt.Errorf("want HOST=ADDR (registry hosts with optional ports, no scheme or path), got %q", v)
	}
	*m = append(*m, registryMapping{host, addr})
	return nil
}
