package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a process the demo started. It runs in its own process group
// (so a terminal's Ctrl-C reaches only the demo, which then stops the
// children in order) and is killed by the kernel if the demo dies first.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string // file holding its output, "" when it goes to the terminal
	done chan struct{}
	err  error // Wait's result, valid once done is closed
	// stopping is set before the demo stops it, so its exit is not reported
	// as a crash.
	stopping bool
}

// startChild runs bin with args; output goes to logPath (created), or to
// out when logPath is empty.
func startChild(name, logPath string, out io.Writer, bin string, args ...string) (*child, error) {
	c := &child{name: name, log: logPath, done: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	var logFile *os.File
	if logPath != "" {
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return nil, err
		}
		f, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		logFile = f
		c.cmd.Stdout, c.cmd.Stderr = f, f
	} else {
		c.cmd.Stdout, c.cmd.Stderr = out, out
	}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(c.done)
	}()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child has exited.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// crashErr describes an unexpected exit, with the end of its log.
func (c *child) crashErr() error {
	msg := fmt.Sprintf("%s exited unexpectedly (%v)", c.name, c.err)
	if c.log != "" {
		msg += fmt.Sprintf("; last lines of %s:\n%s", c.log, tail(c.log, 15))
	}
	return errors.New(msg)
}

// stop sends SIGTERM to the child's process group and waits for it to exit,
// killing the group after grace.
func (c *child) stop(grace time.Duration) {
	c.stopping = true
	if c.exited() {
		return
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// childPIDs lists the processes whose parent is ppid, with their command
// names, from /proc.
func childPIDs(ppid int) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, parent, ok := procStat(pid)
		if ok && parent == ppid {
			out[pid] = comm
		}
	}
	return out
}

// procStat reads a process's command name and parent pid.
func procStat(pid int) (comm string, ppid int, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	open, closing := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || closing < open {
		return "", 0, false
	}
	fields := strings.Fields(string(data[closing+1:]))
	if len(fields) < 2 || fields[0] == "Z" || fields[0] == "X" {
		return "", 0, false // gone, or a zombie: not running
	}
	ppid, err = strconv.Atoi(fields[1])
	if err != nil {
		return "", 0, false
	}
	return string(data[open+1 : closing]), ppid, true
}

// alive reports whether pid runs (a zombie does not count) and its command
// line contains want, which guards against a recycled pid.
func alive(pid int, want string) bool {
	if pid <= 0 {
		return false
	}
	if _, _, ok := procStat(pid); !ok {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return want == "" || bytes.Contains(cmdline, []byte(want))
}
