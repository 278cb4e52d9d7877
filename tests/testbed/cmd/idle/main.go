// Command idle is the program of the test bed's private test image: it says it started
// and stays up until SIGINT or SIGTERM, so that a Pod running it reaches Running.
//
// With the argument "probe-api" it first asks the API server for /version through the
// kubernetes Service, as in-cluster clients do (its address from the environment kubelet
// sets, the CA from the mounted ServiceAccount volume), and prints the outcome, so a test
// can read from the Pod's log whether Pods reach the API server.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const caFile = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

func main() {
	fmt.Println("regcred test bed: idle image running")
	if len(os.Args) > 1 && os.Args[1] == "probe-api" {
		fmt.Println(probeAPI())
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}

func probeAPI() string {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	url := "https://" + net.JoinHostPort(host, port) + "/version"
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return "api: " + err.Error()
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	resp, err := client.Get(url)
	if err != nil {
		return "api: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Sprintf("api: GET %s: %s %s", url, resp.Status, body)
}
