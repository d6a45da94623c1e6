package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestVerbosityCap runs the binary: a verbosity at which client-go would log
// API bodies (Secrets included) is refused with exit status 2 and one line
// saying why; up to 7 the operator gets past its flags (and then fails for
// the missing kubeconfig).
func TestVerbosityCap(t *testing.T) {
	bin := buildOperator(t)
	const why = "would make client-go log API request and response bodies, including Secrets; the highest accepted verbosity is 7"
	for _, tc := range []struct {
		args    []string
		refused string // the flag as the error names it; empty: accepted
	}{
		{args: []string{"-v=8"}, refused: "-v=8"},
		{args: []string{"-v=10"}, refused: "-v=10"},
		{args: []string{"--v=9"}, refused: "-v=9"},
		{args: []string{"-v", "8"}, refused: "-v=8"},
		{args: []string{"-vmodule=round_trippers=8"}, refused: "-vmodule=round_trippers=8"},
		{args: []string{"-v=2", "--vmodule=controller=4,request=9"}, refused: "-vmodule=request=9"},
		{args: []string{"-v=7"}},
		{args: []string{"--v=7", "-vmodule=round_trippers=7"}},
		{args: []string{"-v=0"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), bin, append([]string{"--kubeconfig", "/nonexistent"}, tc.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("run: %v, want a non-zero exit\n%s", err, stderr.String())
			}
			if tc.refused != "" {
				want := fmt.Sprintf("gpu-operator: %s %s\n", tc.refused, why)
				if exit.ExitCode() != 2 || stderr.String() != want || stdout.Len() != 0 {
					t.Errorf("exit %d, stderr %q, stdout %q; want exit 2, stderr %q", exit.ExitCode(), stderr.String(), stdout.String(), want)
				}
				return
			}
			// Past the flags: the kubeconfig is the next thing to fail.
			if exit.ExitCode() != 1 || !strings.Contains(stderr.String(), "loading Kubernetes client config") || strings.Contains(stderr.String(), "would make client-go") {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1 for the missing kubeconfig and no verbosity error", exit.ExitCode(), stderr.String())
			}
		})
	}
}
