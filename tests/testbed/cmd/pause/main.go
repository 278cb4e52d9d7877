// Command pause is the test bed node's sandbox ("pause") image's only program: it holds a
// Pod's namespaces, reaps orphaned children and exits on SIGINT or SIGTERM. The bed
// builds it itself, since it pulls nothing from outside registries.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			return
		}
		// As PID 1 of the Pod, reap whatever was re-parented to it.
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
