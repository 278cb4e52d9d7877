package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const (
	// pauseBinary and idleBinary are static programs build.sh puts into --bin; the node's
	// images are made from them, since the bed pulls nothing from outside.
	pauseBinary = "testbed-pause"
	idleBinary  = "testbed-idle"
	// pauseImageRef is imported into containerd, never pulled: it is the sandbox image.
	pauseImageRef = "localhost/regcred-testbed/pause:1"
	// idleImageRepo holds the private image Pods run (the registry refuses anonymous pulls).
	idleImageRepo = "regcred/idle"
	idleImageTag  = "1"
)

// buildNodeImages packs the pause and idle programs as OCI images, pushes the idle one to
// the bed's registry and writes the pause one as an archive for containerd to import.
// Their layers differ, so no digest pulled with a Secret is ever preloaded (kubelet keeps
// records of which pulls needed credentials).
func (b *bed) buildNodeImages(ctx context.Context) error {
	ctx, cancel := context.WithTimeoutCause(ctx, pushTimeout,
		fmt.Errorf("building the node's images took longer than %s", pushTimeout))
	defer cancel()
	work := b.nodePath("images")
	layout := filepath.Join(work, "oci")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if out, err := runTool(ctx, os.Environ(), "umoci", "init", "--layout", layout); err != nil {
		return fmt.Errorf("umoci init: %v: %s", err, out)
	}
	for _, img := range []struct{ tag, binary string }{{"pause", pauseBinary}, {"idle", idleBinary}} {
		ref := layout + ":" + img.tag
		// --bin holds symlinks: umoci would pack the link, not the program.
		program, err := filepath.EvalSymlinks(filepath.Join(b.bin, img.binary))
		if err != nil {
			return err
		}
		steps := [][]string{
			{"new", "--image", ref},
			{"insert", "--image", ref, program, "/" + img.tag},
			{"config", "--image", ref, "--config.entrypoint", "/" + img.tag},
		}
		for _, args := range steps {
			if out, err := runTool(ctx, os.Environ(), "umoci", args...); err != nil {
				return fmt.Errorf("umoci %s (%s): %v: %s", args[0], img.tag, err, out)
			}
		}
	}

	home := filepath.Join(work, "skopeo-home")
	authFile, err := writeAuthFile(home, []string{b.registry.Host}, b.registry.Username, b.registry.Password)
	if err != nil {
		return err
	}
	defer os.Remove(authFile)
	image := b.registry.Host + "/" + idleImageRepo + ":" + idleImageTag
	out, err := runSkopeo(ctx, home, nil, "copy", "--quiet",
		"--dest-authfile", authFile, "--dest-cert-dir", b.registry.CADir,
		"oci:"+layout+":idle", "docker://"+image)
	if err != nil {
		return fmt.Errorf("skopeo copy to %s: %v: %s", image, err,
			scrub(string(out), b.registry.Username, b.registry.Password))
	}
	archive := filepath.Join(work, "pause.tar")
	if out, err := runSkopeo(ctx, home, nil, "copy", "--quiet",
		"oci:"+layout+":pause", "oci-archive:"+archive+":"+pauseImageRef); err != nil {
		return fmt.Errorf("skopeo copy to %s: %v: %s", archive, err, out)
	}
	b.node.info.Image = image
	b.node.info.ECRImage = b.aws.ECRRegistry + "/" + idleImageRepo + ":" + idleImageTag
	return nil
}

// importPauseImage imports the pause image into containerd's Kubernetes namespace.
func (b *bed) importPauseImage(ctx context.Context) error {
	archive := b.nodePath("images", "pause.tar")
	base := pauseImageRef[:strings.LastIndex(pauseImageRef, ":")]
	out, err := runTool(ctx, os.Environ(), filepath.Join(b.bin, "ctr"),
		"--address", b.node.record.Containerd, "--namespace", "k8s.io",
		"images", "import", "--base-name", base, archive)
	if err != nil {
		return fmt.Errorf("ctr images import: %v: %s", err, out)
	}
	return nil
}
