package bootstrap

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

// The join recipes in manifests/examples/bootstrap render with the values
// the operator hands them (a minted token, the CA hash, .Values from
// valuesFrom), and what they render is checked by the tools that run it:
// cloud-init's own schema check for #cloud-config, shellcheck for scripts.
// .ci/run installs both from Debian; without them the check is skipped and
// says so.
func TestJoinRecipes(t *testing.T) {
	dir := filepath.Join("..", "..", "manifests", "examples", "bootstrap")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("recipes in %s: %v (%d files)", dir, err, len(files))
	}
	// The examples' bootstrap Secrets too (the README shows them).
	files = append(files, filepath.Join("..", "..", "manifests", "examples", "bootstrapped-inference.yaml"))
	data := Data{
		NodeName: "gpur-0f8fad5bd9cb469f-1", RequestName: "train", RequestNamespace: "ml", Provider: "lambdalabs", Region: "us-east-1",
		Labels:       map[string]string{"tgp.solanyn.com/request": "train", "team": "a"},
		Taints:       []tgpv1.NodeTaint{{Key: "gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule}},
		JoinToken:    "abcdef.0123456789abcdef",
		APIServerURL: "https://10.0.0.10:6443", CACertHash: "sha256:" + strings.Repeat("ab", 32), CACertData: "LS0tLS1CRUdJTi0tLS0t",
	}
	data.KubeletLabels, data.KubeletTaints = KubeletLabels(data.Labels), KubeletTaints(data.Taints)
	formats := map[string]int{}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var templates []string
		values := map[string]string{}
		for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind != "Secret" {
				continue // the examples' GPURequests
			}
			var s corev1.Secret
			if err := yaml.UnmarshalStrict(doc, &s); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if s.Labels["tgp.solanyn.com/bootstrap"] != "true" {
				t.Errorf("%s: Secret %s lacks the consent label", file, s.Name)
			}
			if u, ok := s.StringData["userdata"]; ok {
				templates = append(templates, u)
				continue
			}
			for k, v := range s.StringData {
				values[k] = v
			}
		}
		data.Values = values
		for _, tmpl := range templates {
			out, err := Render(tmpl, data, Limits{MaxBytes: 16 << 10})
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			path := filepath.Join(t.TempDir(), "rendered")
			if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			switch {
			case strings.HasPrefix(out, "#cloud-config"):
				formats["cloud-config"]++
				check(t, file, out, "cloud-init", "schema", "-c", path)
			case strings.HasPrefix(out, "#!/bin/bash"):
				formats["bash"]++
				check(t, file, out, "shellcheck", "-s", "bash", "-S", "warning", path)
			default:
				t.Errorf("%s renders neither #cloud-config nor a bash script", file)
			}
		}
	}
	// The default template, with and without a minted token.
	for _, d := range []Data{data, {NodeName: data.NodeName, KubeletLabels: data.KubeletLabels, KubeletTaints: data.KubeletTaints}} {
		out, err := Render(DefaultTemplate, d, Limits{MaxBytes: 16 << 10})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "rendered")
		if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		check(t, "DefaultTemplate", out, "shellcheck", "-s", "bash", "-S", "warning", path)
	}
	if formats["cloud-config"] == 0 || formats["bash"] < 3 {
		t.Errorf("recipes by format %v, want a cloud-init one and the bash ones", formats)
	}
}

func check(t *testing.T, file, out, tool string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Logf("%s: %s is not installed (.ci/run installs it from Debian): not checked", file, tool)
		return
	}
	if msg, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
		t.Errorf("%s: %s refuses the rendered recipe: %v\n%s\n--- rendered:\n%s", file, tool, err, msg, out)
	}
}

// TestREADMEBootstrapExamples: the bootstrap Secrets the README shows render
// and pass the same checks as the recipes (a Talos machine config, neither
// cloud-init nor a script, must at least be YAML).
func TestREADMEBootstrapExamples(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	data := Data{
		NodeName: "gpur-0f8fad5bd9cb469f-1", RequestName: "inference", RequestNamespace: "ml", Provider: "lambdalabs", Region: "us-east-1",
		Labels:    map[string]string{"tgp.solanyn.com/request": "inference", "workload": "inference"},
		JoinToken: "abcdef.0123456789abcdef", APIServerURL: "https://10.0.0.10:6443",
		CACertHash: "sha256:" + strings.Repeat("ab", 32), CACertData: "LS0tLS1CRUdJTi0tLS0t",
	}
	data.KubeletLabels = KubeletLabels(data.Labels)
	blocks := strings.Split(string(raw), "```yaml\n")[1:]
	checked := 0
	for _, block := range blocks {
		block, _, _ = strings.Cut(block, "```")
		for _, doc := range strings.Split(block, "\n---\n") {
			var s corev1.Secret
			if yaml.Unmarshal([]byte(doc), &s) != nil || s.Kind != "Secret" || s.Labels["tgp.solanyn.com/bootstrap"] != "true" {
				continue
			}
			tmpl, ok := s.StringData["userdata"]
			if !ok {
				continue // a valuesFrom Secret
			}
			checked++
			out, err := Render(tmpl, data, Limits{MaxBytes: 16 << 10})
			if err != nil {
				t.Fatalf("README Secret %s: %v", s.Name, err)
			}
			path := filepath.Join(t.TempDir(), "rendered")
			if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			name := "README Secret " + s.Name
			switch {
			case strings.HasPrefix(out, "#cloud-config"):
				check(t, name, out, "cloud-init", "schema", "-c", path)
			case strings.HasPrefix(out, "#!"):
				check(t, name, out, "shellcheck", "-s", "bash", "-S", "warning", path)
			default:
				var v map[string]any
				if err := yaml.UnmarshalStrict([]byte(out), &v); err != nil {
					t.Errorf("%s renders neither cloud-init, a script nor YAML: %v\n%s", name, err, out)
				}
			}
		}
	}
	if checked < 2 {
		t.Fatalf("%d bootstrap Secrets found in the README, want its cloud-init and Talos examples", checked)
	}
}
