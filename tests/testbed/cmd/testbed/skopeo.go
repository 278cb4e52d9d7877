package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// acceptAnything is a containers-policy.json that trusts every image: the test bed checks
// credentials, not signatures, and must not depend on the host's /etc/containers.
const acceptAnything = `{"default":[{"type":"insecureAcceptAnything"}]}`

// registryMapping sends pulls of images named HOST/... to ADDR/... (pullcheck --map).
type registryMapping struct{ host, addr string }

// registriesConf renders a containers-registries.conf(5) with one [[registry]] per mapping.
// Image names keep their host; only the location pulled from changes.
func registriesConf(mappings []registryMapping) string {
	var b strings.Builder
	b.WriteString("# Written by testbed: the host's /etc/containers/registries.conf does not apply.\n")
	b.WriteString("unqualified-search-registries = []\n")
	for _, m := range mappings {
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %q\nlocation = %q\n", m.host, m.addr)
	}
	return b.String()
}

// runSkopeo runs skopeo with home as its HOME and runtime directory, and with its own
// policy and registries.conf, so that no credentials, policy or mirrors from the machine
// leak into the result.
func runSkopeo(ctx context.Context, home string, mappings []registryMapping, args ...string) ([]byte, error) {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	policy := filepath.Join(home, "policy.json")
	if err := os.WriteFile(policy, []byte(acceptAnything), 0o600); err != nil {
		return nil, err
	}
	registries := filepath.Join(home, "registries.conf")
	if err := os.WriteFile(registries, []byte(registriesConf(mappings)), 0o600); err != nil {
		return nil, err
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_RUNTIME_DIR=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
	}
	if tmp := os.Getenv("TMPDIR"); tmp != "" {
		env = append(env, "TMPDIR="+tmp)
	}
	return runTool(ctx, env, "skopeo",
		append([]string{"--policy", policy, "--registries-conf", registries}, args...)...)
}

// writeAuthFile writes a minimal containers auth.json (mode 0600) holding one credential
// for each of servers, so that the password never appears on a command line.
func writeAuthFile(dir string, servers []string, username, password string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	entry := map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(username + ":" + password))}
	auths := map[string]any{}
	for _, s := range servers {
		auths[s] = entry
	}
	auth := map[string]any{"auths": auths}
	data, err := json.Marshal(auth)
	if err != nil {
		return "", err
	}
	// CreateTemp creates the file with mode 0600.
	f, err := os.CreateTemp(dir, "auth-*.json")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// scrub removes a password, in the plain and base64 forms a registry client may echo,
// from text that is about to be printed.
func scrub(text, username, password string) string {
	if password == "" {
		return text
	}
	var secrets []string
	for _, s := range []string{password, username + ":" + password} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding,
			base64.RawStdEncoding, base64.RawURLEncoding} {
			secrets = append(secrets, enc.EncodeToString([]byte(s)))
		}
	}
	secrets = append(secrets, password)
	for _, s := range secrets {
		text = strings.ReplaceAll(text, s, "[redacted]")
	}
	return text
}
