package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long a child gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// childAttr makes a child die with the test bed (Pdeathsig, even when the test bed is
// SIGKILLed) and puts it in its own process group, so a terminal's Ctrl-C reaches only the
// test bed, which then tears down in order.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// proc is one long-running child process whose output goes to its own log file.
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string
	// expected is set before a test bed command stops the process on purpose.
	expected bool
	cmd      *exec.Cmd
	done     chan struct{} // closed once the process has exited and been reaped
	err      error         // how it exited; valid after done is closed
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has already exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitStatus describes how the process ended, for messages.
func (p *proc) exitStatus() string {
	if p.err == nil {
		return "exit status 0"
	}
	return p.err.Error()
}

// stop sends SIGTERM to the process group, waits up to stopGrace, then SIGKILLs it, and
// returns once the process has been reaped.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	began := time.Now()
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		logf("stopped %s in %.1fs", p.name, time.Since(began).Seconds())
	case <-time.After(stopGrace):
		logf("%s did not stop within %s; killing it", p.name, stopGrace)
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
}

// supervisor owns every long-running child of the test bed.
type supervisor struct {
	procs []*proc
	exits chan *proc // each child once, when it exits
}

func newSupervisor() *supervisor {
	return &supervisor{exits: make(chan *proc, 16)}
}

// start runs bin with args, its stdout and stderr appended to logPath. It must be called
// from the main goroutine (see init in main.go).
func (s *supervisor) start(name, bin string, args []string, logPath string) (*proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The child holds its own descriptor; ours is not needed once it has started.
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %v", name, err)
	}
	p := &proc{name: name, bin: bin, args: args, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	s.procs = append(s.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		s.exits <- p
	}()
	return p, nil
}

// find returns the newest process started under name that is still running.
func (s *supervisor) find(name string) *proc {
	for i := len(s.procs) - 1; i >= 0; i-- {
		if p := s.procs[i]; p.name == name && !p.exited() {
			return p
		}
	}
	return nil
}

// stopAll stops the children in reverse start order, so that nothing loses its backend
// (the API server its etcd) while still shutting down.
func (s *supervisor) stopAll() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
	}
}

// runTool runs a short-lived helper (umoci, skopeo, kubectl) to completion and returns its
// combined output. It is killed, with its process group, if ctx ends first.
func runTool(ctx context.Context, env []string, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = childAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%v (%v)", err, context.Cause(ctx))
	}
	return out.Bytes(), err
}

// logTail returns the last n lines of a log file, for failure reports.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logf writes one progress line to stderr; stdout is reserved for the "ready" line.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testbed: "+format+"\n", args...)
}
