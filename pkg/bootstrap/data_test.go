package bootstrap

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

func TestKubeletFlags(t *testing.T) {
	labels := map[string]string{
		"z.example.com/last": "1", "a": "", "tgp.solanyn.com/request": "train",
		"evil": "x,node-role.kubernetes.io/control-plane=true", // a comma adds a label
		"eq":   "a=b", "sp": "a --pod-manifest-path=/x", "nl": "a\nb", "q": `a"b`,
		"bad key=1": "v", "": "v", "k": strings.Repeat("v", 64),
	}
	if got, want := KubeletLabels(labels), "a=,tgp.solanyn.com/request=train,z.example.com/last=1"; got != want {
		t.Errorf("KubeletLabels = %q, want %q", got, want)
	}
	taints := []tgpv1.NodeTaint{
		{Key: "nvidia.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		{Key: "dedicated", Effect: corev1.TaintEffectNoExecute},
		{Key: "a", Value: "b:NoSchedule,c=d", Effect: corev1.TaintEffectNoSchedule},
		{Key: "b", Value: "x", Effect: "NoSchedule --v=9"},
		{Key: "", Value: "x", Effect: corev1.TaintEffectPreferNoSchedule},
		{Key: "last", Value: "1", Effect: corev1.TaintEffectPreferNoSchedule},
	}
	if got, want := KubeletTaints(taints), "nvidia.com/gpu=true:NoSchedule,dedicated=:NoExecute,last=1:PreferNoSchedule"; got != want {
		t.Errorf("KubeletTaints = %q, want %q", got, want)
	}
	if KubeletLabels(nil) != "" || KubeletTaints(nil) != "" {
		t.Error("no labels or taints should give empty flags")
	}
}

func TestNewData(t *testing.T) {
	req := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: "team-a"}}
	req.Spec.NodeTaints = []tgpv1.NodeTaint{{Key: "gpu", Effect: corev1.TaintEffectNoSchedule}}
	labels := map[string]string{"b": "2", "a": "1"}
	got := NewData(req, "tgp-1", "lambda", "us-east-1", labels)
	want := Data{
		NodeName: "tgp-1", RequestName: "train", RequestNamespace: "team-a", Provider: "lambda", Region: "us-east-1",
		Labels: labels, Taints: req.Spec.NodeTaints, KubeletLabels: "a=1,b=2", KubeletTaints: "gpu=:NoSchedule",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("NewData (-want +got):\n%s", d)
	}
}

// A bootRun is what one run of a rendered script did.
type bootRun struct {
	err      error      // bash's exit: nil for status 0
	calls    [][]string // the stubs' calls in order, each the command and its arguments
	defaults *string    // the kubelet defaults file, nil if the script wrote none
	// kubeconfig is the kubelet's bootstrap kubeconfig, nil if the script wrote none.
	kubeconfig *string
	pwned      bool // a file named pwned appeared in the working directory
	stderr     string
}

// stubExits are the exit statuses of the stub commands.
type stubExits struct {
	hostnamectl, systemctlCat, systemctl int
}

// runScript renders tmpl for data, checks that bash -n accepts it and runs
// it with bash in a temporary directory. PATH holds only stubs of
// hostnamectl and systemctl that record their arguments and exit as exits
// says (systemctl cat with systemctlCat, any other systemctl call with
// systemctl), so the script can run nothing else but bash's builtins, and
// TGP_KUBELET_DEFAULTS points into the directory.
func runScript(t *testing.T, tmpl string, data Data, exits stubExits) bootRun {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to run the default template with")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh for the stub commands")
	}
	out, err := Render(tmpl, data, Limits{MaxBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, work := filepath.Join(dir, "bin"), filepath.Join(dir, "work")
	for _, d := range []string{bin, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A call is recorded as its argument count, the command and the
	// arguments, each NUL-terminated: arguments may hold newlines but
	// never a NUL.
	record := `printf '%s\0' "$#" "${0##*/}" "$@" >>"$STUB_LOG"` + "\n"
	stubs := map[string]string{
		"hostnamectl": record + `exit "$STUB_HOSTNAMECTL"`,
		"systemctl":   record + `if [ "$1" = cat ]; then exit "$STUB_SYSTEMCTL_CAT"; fi; exit "$STUB_SYSTEMCTL"`,
	}
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!"+sh+"\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "bootstrap.sh")
	if err := os.WriteFile(script, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s\nscript:\n%s", err, msg, out)
	}
	log, defaults := filepath.Join(dir, "calls"), filepath.Join(dir, "kubelet")
	kubeconfig := filepath.Join(dir, "bootstrap-kubelet.conf")
	cmd := exec.Command(bash, script)
	cmd.Dir = work
	cmd.Env = []string{
		"PATH=" + bin, "TGP_KUBELET_DEFAULTS=" + defaults, "TGP_BOOTSTRAP_KUBECONFIG=" + kubeconfig, "STUB_LOG=" + log,
		fmt.Sprintf("STUB_HOSTNAMECTL=%d", exits.hostnamectl),
		fmt.Sprintf("STUB_SYSTEMCTL_CAT=%d", exits.systemctlCat),
		fmt.Sprintf("STUB_SYSTEMCTL=%d", exits.systemctl),
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	run := bootRun{err: cmd.Run(), stderr: stderr.String()}
	if raw, err := os.ReadFile(log); err == nil {
		fields := strings.Split(string(raw), "\x00")
		for len(fields) > 1 {
			n, err := strconv.Atoi(fields[0])
			if err != nil || len(fields) < n+3 {
				t.Fatalf("stub log %q is not a list of calls", raw)
			}
			run.calls = append(run.calls, fields[1:n+2])
			fields = fields[n+2:]
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if raw, err := os.ReadFile(defaults); err == nil {
		s := string(raw)
		run.defaults = &s
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if raw, err := os.ReadFile(kubeconfig); err == nil {
		info, err := os.Stat(kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("bootstrap kubeconfig mode %v, want 0600: it holds a token", perm)
		}
		s := string(raw)
		run.kubeconfig = &s
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(work, "pwned")); err == nil {
		run.pwned = true
	}
	return run
}

// kubeletArgs reads a kubelet defaults file as systemd does: an
// EnvironmentFile line KUBELET_EXTRA_ARGS='...' (a single-quoted value is
// taken as it is), and the value split at whitespace, as ExecStart's
// $KUBELET_EXTRA_ARGS is. It returns the two flags' values, split at
// commas, or fails the test if the file is anything else.
func kubeletArgs(t *testing.T, file string) (labels, taints []string) {
	t.Helper()
	const prefix = "KUBELET_EXTRA_ARGS='"
	line, ok := strings.CutSuffix(file, "'\n")
	if !ok || strings.Count(file, "\n") != 1 || !strings.HasPrefix(line, prefix) {
		t.Fatalf("defaults file %q is not one line KUBELET_EXTRA_ARGS='...'", file)
	}
	value := line[len(prefix):]
	if strings.Contains(value, "'") {
		t.Fatalf("defaults file %q: a quote inside the value ends it early", file)
	}
	words := strings.Fields(value)
	if len(words) != 2 || !strings.HasPrefix(words[0], "--node-labels=") || !strings.HasPrefix(words[1], "--register-with-taints=") {
		t.Fatalf("kubelet arguments %q, want --node-labels=... --register-with-taints=...", words)
	}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	return split(strings.TrimPrefix(words[0], "--node-labels=")), split(strings.TrimPrefix(words[1], "--register-with-taints="))
}

var (
	callHostname = func(name string) []string { return []string{"hostnamectl", "set-hostname", name} }
	callCat      = []string{"systemctl", "cat", "kubelet.service"}
	callRestart  = []string{"systemctl", "--no-block", "restart", "kubelet.service"}
)

func TestDefaultTemplateIsAScript(t *testing.T) {
	out, err := Render(DefaultTemplate, testData(2), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "#!/bin/bash\n") || !strings.Contains(out, "\nset -eu\n") {
		t.Errorf("the default template is not a bash script with set -eu:\n%s", out)
	}
}

func TestDefaultTemplateRuns(t *testing.T) {
	req := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: "team-a"}}
	req.Spec.NodeTaints = []tgpv1.NodeTaint{
		{Key: "nvidia.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		{Key: "dedicated", Effect: corev1.TaintEffectNoExecute},
		{Key: "example.com/t_1.x-Y", Value: "v.1-x_Y", Effect: corev1.TaintEffectPreferNoSchedule},
	}
	// Valid but tricky: an empty value, dots, dashes, underscores and
	// capitals, a 63-character value, a prefix of digits.
	long := strings.Repeat("a", 62) + "9"
	labels := map[string]string{
		"tgp.solanyn.com/request": "train", "a": "", "example.com/a-b_c.d": "A.b-c_9",
		"k8s.io/Z_z.9-A": "0", "1.2/3": long,
	}
	data := NewData(req, "gpur-0f8fad5bd9cb469f-2", "lambda", "us-east-1", labels)
	wantLabels := []string{"1.2/3=" + long, "a=", "example.com/a-b_c.d=A.b-c_9", "k8s.io/Z_z.9-A=0", "tgp.solanyn.com/request=train"}
	wantTaints := []string{"nvidia.com/gpu=true:NoSchedule", "dedicated=:NoExecute", "example.com/t_1.x-Y=v.1-x_Y:PreferNoSchedule"}
	bare := NewData(&tgpv1.GPURequest{}, "tgp-1", "paperspace", "ny2", nil)

	for _, tc := range []struct {
		name                   string
		data                   Data
		exits                  stubExits
		fails                  bool
		calls                  [][]string
		wantLabels, wantTaints []string // the flags' values in the file, nil for an empty flag
		noFile                 bool
	}{
		{name: "labels and taints", data: data, calls: [][]string{callHostname(data.NodeName), callCat, callRestart},
			wantLabels: wantLabels, wantTaints: wantTaints},
		{name: "no labels or taints", data: bare, calls: [][]string{callHostname("tgp-1"), callCat, callRestart}},
		{name: "no kubelet unit", data: data, exits: stubExits{systemctlCat: 1}, calls: [][]string{callHostname(data.NodeName), callCat},
			wantLabels: wantLabels, wantTaints: wantTaints},
		{name: "kubelet restart fails", data: data, exits: stubExits{systemctl: 1}, fails: true,
			calls: [][]string{callHostname(data.NodeName), callCat, callRestart}, wantLabels: wantLabels, wantTaints: wantTaints},
		{name: "hostnamectl fails", data: data, exits: stubExits{hostnamectl: 1}, fails: true,
			calls: [][]string{callHostname(data.NodeName)}, noFile: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := runScript(t, DefaultTemplate, tc.data, tc.exits)
			if tc.fails != (run.err != nil) {
				t.Errorf("script exit: %v, want failure %v; stderr:\n%s", run.err, tc.fails, run.stderr)
			}
			if d := cmp.Diff(tc.calls, run.calls); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
			if tc.noFile {
				if run.defaults != nil {
					t.Errorf("defaults file %q written after a failure", *run.defaults)
				}
				return
			}
			if run.defaults == nil {
				t.Fatalf("no defaults file written; stderr:\n%s", run.stderr)
			}
			gotLabels, gotTaints := kubeletArgs(t, *run.defaults)
			if d := cmp.Diff(tc.wantLabels, gotLabels); d != "" {
				t.Errorf("kubelet labels (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantTaints, gotTaints); d != "" {
				t.Errorf("kubelet taints (-want +got):\n%s", d)
			}
		})
	}
}

func TestDefaultTemplateEscapes(t *testing.T) {
	// What the quoting prevents: the same script with the node name
	// written bare lets a value run a command (here a redirection, which
	// needs no program on the stubs' PATH).
	naive := strings.Replace(DefaultTemplate, "{{ shell .NodeName }}", "{{ .NodeName }}", 1)
	if naive == DefaultTemplate {
		t.Fatal("DefaultTemplate no longer writes {{ shell .NodeName }}: update this test")
	}
	if run := runScript(t, naive, Data{NodeName: "x; >pwned"}, stubExits{}); !run.pwned {
		t.Fatalf("the unquoted script resists the injection: the test tests nothing (calls %q, %v)", run.calls, run.err)
	}

	hostile := []string{
		"x'; >pwned; '",
		`x"; >pwned; "`,
		"'\\''; >pwned #",
		`\'; >pwned; #`,
		"$(>pwned)",
		"`>pwned`",
		"${IFS}>pwned",
		"x\n>pwned\n",
		"x\r\n>pwned #",
		"x\nruncmd:\n  - [sh, -c, '>pwned']",
		"x,node-role.kubernetes.io/control-plane=true",
		"a=b --pod-manifest-path=/tmp",
		"x\x7f\x1b[2J\xff\u2028",
		"a\x00b",
		"{{ .Labels }}",
		"-",
	}
	for _, v := range hostile {
		req := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "n"}}
		req.Spec.NodeTaints = []tgpv1.NodeTaint{
			{Key: "gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule},
			{Key: "t", Value: v, Effect: corev1.TaintEffectNoSchedule},
			{Key: v, Value: "x", Effect: corev1.TaintEffectNoSchedule},
			{Key: "e", Value: "x", Effect: corev1.TaintEffect(v)},
		}
		labels := map[string]string{"ok": "1", "v": v, v: "k", "z": "2"}
		run := runScript(t, DefaultTemplate, NewData(req, v, "p", "r", labels), stubExits{})
		if run.err != nil || run.pwned {
			t.Errorf("%q: exit %v, pwned %v; stderr:\n%s", v, run.err, run.pwned, run.stderr)
		}
		// bash drops a NUL byte of a script (past its first line), and an
		// argument cannot hold one: the rest of the value is the name.
		want := [][]string{callHostname(strings.ReplaceAll(v, "\x00", "")), callCat, callRestart}
		if d := cmp.Diff(want, run.calls); d != "" {
			t.Errorf("%q: calls (-want +got):\n%s", v, d)
		}
		if run.defaults == nil {
			t.Errorf("%q: no defaults file written", v)
			continue
		}
		gotLabels, gotTaints := kubeletArgs(t, *run.defaults)
		if want := []string{"ok=1", "z=2"}; !slices.Equal(gotLabels, want) {
			t.Errorf("%q: kubelet labels %q, want %q", v, gotLabels, want)
		}
		if want := []string{"gpu=true:NoSchedule"}; !slices.Equal(gotTaints, want) {
			t.Errorf("%q: kubelet taints %q, want %q", v, gotTaints, want)
		}
	}
}

func TestQuoteYAML(t *testing.T) {
	for _, s := range []string{
		"", "plain", "a: b", "- x", "'q'", `"dq"`, `back\slash`, "new\nline", "tab\there", "cr\rx",
		"\x00\x01\x1f\x7f", "\u0085\u009f\u00a0", "\u2028\u2029", "\ufeffbom", "\ufffe\uffff", "é日本😀",
		"# not a comment", "&anchor *alias !tag", "{a: 1}", "[1, 2]", "null", "true", "0x10", "~",
	} {
		q := quoteYAML(s)
		var fromJSON, fromYAML string
		if err := json.Unmarshal([]byte(q), &fromJSON); err != nil || fromJSON != s {
			t.Errorf("%q: %s as JSON = %q, %v", s, q, fromJSON, err)
		}
		if err := yaml.Unmarshal([]byte("k: "+q), &struct{ K *string }{&fromYAML}); err != nil || fromYAML != s {
			t.Errorf("%q: %s as YAML = %q, %v", s, q, fromYAML, err)
		}
		for _, c := range q {
			if c < 0x20 || 0x7f <= c && c <= 0x9f || c == 0x2028 || c == 0x2029 || c == 0xfeff || c == 0xfffe || c == 0xffff {
				t.Errorf("%q: %q has the raw character %U", s, q, c)
			}
		}
	}
	if got := quoteYAML("a\xffb"); got != `"a\ufffdb"` {
		t.Errorf("invalid UTF-8: %s", got)
	}
}

func TestQuoteShell(t *testing.T) {
	cases := []string{"", "plain", "it's", "'", "''", "$(id) `id` $HOME \\ \" ; | & > <", "new\nline", "*?[a]"}
	for _, s := range cases {
		if got := quoteShell(s); got == "" || got[0] != '\'' || got[len(got)-1] != '\'' {
			t.Errorf("%q: %s is not single-quoted", s, got)
		}
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to check the quoting with")
	}
	for _, s := range cases {
		out, err := exec.Command(sh, "-c", "printf '%s' "+quoteShell(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh printf %s = %q, %v; want %q", quoteShell(s), out, err, s)
		}
	}
}

// TestDefaultTemplateBootstrapKubeconfig: with a minted token the default
// script writes the kubelet's bootstrap kubeconfig (server, CA, this
// machine's token) as client-go reads it, owner-only; without one it
// writes none.
func TestDefaultTemplateBootstrapKubeconfig(t *testing.T) {
	data := testData(2)
	if run := runScript(t, DefaultTemplate, data, stubExits{}); run.err != nil || run.kubeconfig != nil {
		t.Fatalf("without a token: exit %v, kubeconfig %v (want none)\n%s", run.err, run.kubeconfig != nil, run.stderr)
	}
	ca := base64.StdEncoding.EncodeToString([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	data.JoinToken, data.APIServerURL, data.CACertData = "abcdef.0123456789abcdef", "https://203.0.113.7:6443", ca
	run := runScript(t, DefaultTemplate, data, stubExits{})
	if run.err != nil || run.kubeconfig == nil {
		t.Fatalf("with a token: exit %v, kubeconfig written %v\n%s", run.err, run.kubeconfig != nil, run.stderr)
	}
	cfg, err := clientcmd.Load([]byte(*run.kubeconfig))
	if err != nil {
		t.Fatalf("the bootstrap kubeconfig does not load: %v\n%s", err, *run.kubeconfig)
	}
	rest, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rest.Host != data.APIServerURL || rest.BearerToken != data.JoinToken || base64.StdEncoding.EncodeToString(rest.CAData) != ca {
		t.Errorf("bootstrap kubeconfig reaches %q with token %q and CA %q, want %q, %q, %q", rest.Host, rest.BearerToken, rest.CAData, data.APIServerURL, data.JoinToken, ca)
	}
}
