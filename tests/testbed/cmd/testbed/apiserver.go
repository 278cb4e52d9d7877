package main

import (
	"context"
	"fmt"
	"os"
	"time"
)

const apiserverTimeout = 60 * time.Second

// auditPolicy records request metadata for every resource request by anyone but the API
// server itself (its own loopback traffic would drown the log). RequestReceived is kept so
// a request is on disk, with --audit-log-mode=blocking, before its response is sent.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
  - ResponseStarted
rules:
  - level: None
    users: ["system:apiserver"]
  - level: None
    nonResourceURLs: ["*"]
  - level: Metadata
`

// launchAPIServer starts kube-apiserver against etcd.
func (b *bed) launchAPIServer() (*proc, error) {
	b.server = fmt.Sprintf("https://127.0.0.1:%d", b.ports.apiserver)
	b.auditLog = b.path("audit.log")
	policy := b.path("audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	certDir := b.path("run", "kube-apiserver")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	args := []string{
		"--etcd-servers=" + b.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", b.ports.apiserver),
		// Keeps the API server from writing into /var/run/kubernetes.
		"--cert-dir=" + certDir,
		"--tls-cert-file=" + b.pki.apiserverCert,
		"--tls-private-key-file=" + b.pki.apiserverKey,
		"--client-ca-file=" + b.pki.caCert,
		"--anonymous-auth=true",
		"--authorization-mode=RBAC",
		// Both are on by default; naming them keeps the tests' premises explicit.
		"--enable-admission-plugins=NamespaceLifecycle,ServiceAccount",
		// The server's own URL as issuer makes it serve OIDC discovery and the JWKS.
		"--service-account-issuer=" + b.server,
		"--service-account-key-file=" + b.pki.serviceAccountPub,
		"--service-account-signing-key-file=" + b.pki.serviceAccountKey,
		"--service-cluster-ip-range=10.96.0.0/24",
		// There is no network behind the kubernetes Service; don't maintain its endpoints.
		"--endpoint-reconciler-type=none",
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + b.auditLog,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		// Never rotated: readers keep byte offsets into the log (the benchmark writes far
		// more than the 100 MB the server would otherwise rotate at).
		"--audit-log-maxsize=1000000",
		"--profiling=false",
	}
	args = append(args, b.nodeAPIServerArgs()...)
	return b.start("kube-apiserver", args)
}

// awaitAPIServer waits until /readyz answers 200 to the admin.
func (b *bed) awaitAPIServer(ctx context.Context, p *proc) error {
	return waitReady(ctx, p, apiserverTimeout, func() error {
		return expectStatus(b.admin, b.server+"/readyz", 200)
	})
}
