//go:build tools

// Package node pins the container runtime commands the test bed's node is built from,
// so that `go mod tidy` keeps their dependencies. They live in a module of their own:
// containerd's and cri-tools' dependencies need not agree with k8s.io/kubernetes'.
package node

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
