package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
)

// Fault tests drive single components through the lifeline (stdin), one command a line:
//
//	restart NAME   stop NAME (SIGTERM, then SIGKILL), start it again with the same
//	               arguments and wait until it is ready (etcd, kube-apiserver,
//	               kube-controller-manager)
//	kill NAME      SIGKILL NAME and start it again, waiting until it is ready
//	pause NAME     SIGSTOP NAME's process group: connections are accepted by the kernel
//	               and never answered (a black hole), nothing is lost
//	resume NAME    SIGCONT
//
// Each command is answered on stdout with "ok <command>" or "error <command>: <why>".

// command is one line read from the lifeline.
type command struct {
	verb, name, line string
}

// readCommands forwards each line of r as a command, and calls eof when r ends (the test
// process is gone).
func readCommands(r io.Reader, commands chan<- command, eof func()) {
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		c := command{verb: fields[0], line: line}
		if len(fields) > 1 {
			c.name = fields[1]
		}
		commands <- c
	}
	eof()
}

// restartable are the components `restart` and `kill` know how to wait for.
func (b *bed) awaitComponent(ctx context.Context, p *proc) error {
	switch p.name {
	case "etcd":
		return b.awaitEtcd(ctx, p)
	case "kube-apiserver":
		return b.awaitAPIServer(ctx, p)
	case "kube-controller-manager":
		return b.awaitControllerManager(ctx, p)
	}
	return fmt.Errorf("%s cannot be restarted by the test bed", p.name)
}

// handle runs one command from the main goroutine (children must be started from it, see
// init in main.go) and prints its answer.
func (b *bed) handle(ctx context.Context, c command) {
	err := b.run(ctx, c)
	if err != nil {
		fmt.Printf("error %s: %s\n", c.line, oneLine(err.Error()))
		logf("command %q failed: %v", c.line, err)
		return
	}
	fmt.Printf("ok %s\n", c.line)
	logf("command %q done", c.line)
}

func (b *bed) run(ctx context.Context, c command) error {
	p := b.sup.find(c.name)
	if p == nil {
		return fmt.Errorf("no running component named %q", c.name)
	}
	switch c.verb {
	case "pause":
		return syscall.Kill(-p.pid(), syscall.SIGSTOP)
	case "resume":
		return syscall.Kill(-p.pid(), syscall.SIGCONT)
	case "restart", "kill":
		if p.name != "etcd" && p.name != "kube-apiserver" && p.name != "kube-controller-manager" {
			return fmt.Errorf("%s cannot be restarted by the test bed", p.name)
		}
		p.expected = true
		if c.verb == "kill" {
			_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
			<-p.done
		} else {
			p.stop()
		}
		next, err := b.sup.start(p.name, p.bin, p.args, p.logPath)
		if err != nil {
			return err
		}
		logf("restarted %s (pid %d)", next.name, next.pid())
		return b.awaitComponent(ctx, next)
	}
	return fmt.Errorf("unknown command %q (restart, kill, pause, resume)", c.verb)
}
