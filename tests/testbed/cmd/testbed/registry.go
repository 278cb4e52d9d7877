package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"
)

const (
	registryTimeout = 30 * time.Second
	pushTimeout     = 60 * time.Second
	registryUser    = "regcred-test"
	// testImageRepo and testImageTag name the image pushed for pull checks.
	testImageRepo = "regcred/hello"
	testImageTag  = "1"
)

// registryInfo is what the tests need to reach the registry.
type registryInfo struct {
	Host     string `json:"host"`
	Username string `json:"username"`
	Password string `json:"password"`
	Image    string `json:"image"`
	CADir    string `json:"caDir"`
}

// launchRegistry starts docker-registry over TLS with htpasswd auth.
func (b *bed) launchRegistry(registryBin string) (*proc, error) {
	password, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	secret, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("127.0.0.1:%d", b.ports.registry)
	b.registry = registryInfo{
		Host:     host,
		Username: registryUser,
		Password: password,
		Image:    host + "/" + testImageRepo + ":" + testImageTag,
		CADir:    b.path("registry-ca"),
	}
	// skopeo's --cert-dir convention: CA certificates are the *.crt files in a directory.
	if err := os.MkdirAll(b.registry.CADir, 0o755); err != nil {
		return nil, err
	}
	if err := copyFile(b.pki.caCert, filepath.Join(b.registry.CADir, "ca.crt")); err != nil {
		return nil, err
	}
	// The registry checks the hash on every request; the minimum cost keeps pushes fast,
	// and this password protects nothing but a throw-away test registry.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	htpasswd := b.path("registry-htpasswd")
	if err := os.WriteFile(htpasswd, []byte(registryUser+":"+string(hash)+"\n"), 0o600); err != nil {
		return nil, err
	}
	config := map[string]any{
		"version": "0.1",
		"log":     map[string]any{"level": "info", "formatter": "text"},
		"storage": map[string]any{
			"filesystem": map[string]any{"rootdirectory": b.path("registry")},
			"delete":     map[string]any{"enabled": false},
		},
		"http": map[string]any{
			"addr":   host,
			"secret": secret,
			"tls":    map[string]any{"certificate": b.pki.registryCert, "key": b.pki.registryKey},
		},
		"auth": map[string]any{
			"htpasswd": map[string]any{"realm": "regcred-testbed", "path": htpasswd},
		},
	}
	configYAML, err := yaml.Marshal(config)
	if err != nil {
		return nil, err
	}
	configPath := b.path("registry.yml")
	if err := os.WriteFile(configPath, configYAML, 0o600); err != nil {
		return nil, err
	}

	return b.startBinary("registry", registryBin, []string{"serve", configPath})
}

// awaitRegistry waits until /v2/ asks for credentials, then pushes the test image.
func (b *bed) awaitRegistry(ctx context.Context, p *proc) error {
	client, err := tlsClient(b.pki.caCert, "", "")
	if err != nil {
		return err
	}
	if err := waitReady(ctx, p, registryTimeout, func() error {
		return expectStatus(client, "https://"+b.registry.Host+"/v2/", 401)
	}); err != nil {
		return err
	}
	if err := b.pushTestImage(ctx); err != nil && ctx.Err() == nil {
		return &startupError{p.name, p.logPath, "did not accept the test image: " + oneLine(err.Error())}
	}
	return ctx.Err()
}

// pushTestImage builds a one-layer OCI image with umoci and pushes it with skopeo.
func (b *bed) pushTestImage(ctx context.Context) error {
	ctx, cancel := context.WithTimeoutCause(ctx, pushTimeout,
		fmt.Errorf("pushing the test image took longer than %s", pushTimeout))
	defer cancel()
	work := b.path("image")
	layout := filepath.Join(work, "oci")
	file := filepath.Join(work, "hello.txt")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(file, []byte("hello from the regcred test bed\n"), 0o644); err != nil {
		return err
	}
	steps := [][]string{
		{"init", "--layout", layout},
		{"new", "--image", layout + ":hello"},
		{"insert", "--image", layout + ":hello", file, "/hello.txt"},
	}
	for _, args := range steps {
		if out, err := runTool(ctx, os.Environ(), "umoci", args...); err != nil {
			return fmt.Errorf("umoci %s: %v: %s", args[0], err, out)
		}
	}

	home := filepath.Join(work, "skopeo-home")
	authFile, err := writeAuthFile(home, []string{b.registry.Host}, b.registry.Username, b.registry.Password)
	if err != nil {
		return err
	}
	defer os.Remove(authFile)
	out, err := runSkopeo(ctx, home, nil, "copy", "--quiet",
		"--dest-authfile", authFile,
		"--dest-cert-dir", b.registry.CADir,
		"oci:"+layout+":hello", "docker://"+b.registry.Image)
	if err != nil {
		return fmt.Errorf("skopeo copy to %s: %v: %s", b.registry.Image, err,
			scrub(string(out), b.registry.Username, b.registry.Password))
	}
	return nil
}

// oneLine folds multi-line tool output into one line for an error message.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func randomHex(n int) (string, error) {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(buf), nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}
