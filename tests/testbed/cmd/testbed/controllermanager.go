package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const controllerManagerTimeout = 60 * time.Second

// controllers are the only ones the tests rely on: ServiceAccounts (and their legacy
// tokens) in every namespace, namespace deletion, owner-reference garbage collection and
// the kube-root-ca.crt ConfigMap.
var controllers = []string{
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"namespace-controller",
	"garbage-collector-controller",
	"root-ca-certificate-publisher-controller",
}

// controllerRoles are the bootstrap ClusterRoles of those controllers. With
// --use-service-account-credentials=false every controller acts as the controller manager's
// own user, whose role lacks what the namespace deleter, the garbage collector and the
// root-CA publisher need (it expects them to use per-controller ServiceAccounts). Binding
// the user to these roles gives each controller exactly its usual permissions while the
// audit log keeps showing one identity, system:kube-controller-manager, for all of them.
var controllerRoles = []string{
	"system:controller:service-account-controller",
	"system:controller:namespace-controller",
	"system:controller:generic-garbage-collector",
	"system:controller:root-ca-cert-publisher",
}

// launchControllerManager starts kube-controller-manager with only the controllers above.
func (b *bed) launchControllerManager() (*proc, error) {
	ctrls, roles := controllers, controllerRoles
	if b.withNode {
		// Deployments' Pods, the Node's not-ready taint (set by the TaintNodesByCondition
		// admission plugin) lifted once kubelet reports Ready, and Services' endpoints (kube-
		// proxy routes a ClusterIP, and the API server reaches a webhook's Service, only
		// with them).
		ctrls = append(append([]string{}, ctrls...), "deployment-controller", "replicaset-controller",
			"node-lifecycle-controller", "endpoints-controller", "endpointslice-controller")
		roles = append(append([]string{}, roles...), "system:controller:deployment-controller",
			"system:controller:replicaset-controller", "system:controller:node-controller",
			"system:controller:endpoint-controller", "system:controller:endpointslice-controller")
	}
	if err := b.grantControllerRoles(roles); err != nil {
		return nil, err
	}
	kubeconfig := b.path("kube-controller-manager.kubeconfig")
	if err := writeKubeconfig(kubeconfig, b.server, b.pki.caCert, "kube-controller-manager",
		b.pki.kcmCert, b.pki.kcmKey); err != nil {
		return nil, err
	}
	certDir := b.path("run", "kube-controller-manager")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", b.ports.controllerManager),
		// Its self-signed serving certificate goes here instead of /var/run/kubernetes.
		"--cert-dir=" + certDir,
		"--service-account-private-key-file=" + b.pki.serviceAccountKey,
		"--root-ca-file=" + b.pki.caCert,
		"--use-service-account-credentials=false",
		"--controllers=" + strings.Join(ctrls, ","),
		// Its client's default of 20 requests/s made the namespace controller take over
		// 8 minutes for 1,100 namespaces (about 100 requests each); a loopback bed has
		// no one else to protect.
		"--kube-api-qps=1000",
		"--kube-api-burst=2000",
		"--concurrent-namespace-syncs=20",
	}
	return b.start("kube-controller-manager", args)
}

// awaitControllerManager waits until the controller manager has created the default
// ServiceAccount and the kube-root-ca.crt ConfigMap in namespace default, which shows its
// controllers run with the permissions they need.
func (b *bed) awaitControllerManager(ctx context.Context, p *proc) error {
	return waitReady(ctx, p, controllerManagerTimeout, func() error {
		if err := expectStatus(b.admin, b.server+"/api/v1/namespaces/default/serviceaccounts/default", 200); err != nil {
			return err
		}
		return expectStatus(b.admin, b.server+"/api/v1/namespaces/default/configmaps/kube-root-ca.crt", 200)
	})
}

// grantControllerRoles binds the controller manager's user to roles.
func (b *bed) grantControllerRoles(roles []string) error {
	for _, role := range roles {
		binding := rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: "regcred-testbed:" + strings.TrimPrefix(role, "system:")},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{
				APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "system:kube-controller-manager",
			}},
		}
		body, err := json.Marshal(binding)
		if err != nil {
			return err
		}
		url := b.server + "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
		resp, err := b.admin.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("binding the controller manager to %s: %w", role, err)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("binding the controller manager to %s: %s %s", role, resp.Status, msg)
		}
	}
	return nil
}
