package credentials

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

func secret(data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: "ops"}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func TestSecretKey(t *testing.T) {
	for _, tt := range []struct {
		name   string
		secret *corev1.Secret // nil: no Secret
		env    map[string]string
		want   map[string]string
	}{{
		name:   "the Secret's keys, trimmed",
		secret: secret(map[string]string{providers.LambdaLabs: " l-key\n", providers.RunPod: "r-key", providers.Paperspace: "p-key", providers.VastAI: "v-key"}),
		env:    map[string]string{"LAMBDA_API_KEY": "l-env"},
		want:   map[string]string{providers.LambdaLabs: "l-key", providers.RunPod: "r-key", providers.Paperspace: "p-key", providers.VastAI: "v-key"},
	}, {
		name:   "the environment for a missing or blank key",
		secret: secret(map[string]string{providers.LambdaLabs: "l-key", providers.RunPod: "  "}),
		env:    map[string]string{"RUNPOD_API_KEY": "r-env", "PAPERSPACE_API_KEY": "p-env", "VAST_API_KEY": "v-env"},
		want:   map[string]string{providers.LambdaLabs: "l-key", providers.RunPod: "r-env", providers.Paperspace: "p-env", providers.VastAI: "v-env"},
	}, {
		name: "the environment without a Secret",
		env:  map[string]string{"LAMBDA_API_KEY": "l-env"},
		want: map[string]string{providers.LambdaLabs: "l-env", providers.RunPod: "", providers.Paperspace: "", providers.VastAI: ""},
	}, {
		name:   "a Secret of another name is not read",
		secret: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "ops"}, Data: map[string][]byte{providers.RunPod: []byte("x")}},
		want:   map[string]string{providers.LambdaLabs: "", providers.RunPod: "", providers.Paperspace: "", providers.VastAI: ""},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range Providers {
				t.Setenv(EnvVar(p), tt.env[EnvVar(p)])
			}
			kube := fake.NewClientset()
			if tt.secret != nil {
				kube = fake.NewClientset(tt.secret)
			}
			s := NewSecret(kube, "ops", "creds")
			s.Start(t.Context(), nil)
			got := map[string]string{}
			for _, p := range Providers {
				got[p] = s.Key(p)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSecretRotation: a changed Secret is served without a restart, and
// onChange runs for its creation and each update.
func TestSecretRotation(t *testing.T) {
	for _, p := range Providers {
		t.Setenv(EnvVar(p), "")
	}
	kube := fake.NewClientset()
	changes := make(chan struct{}, 10)
	s := NewSecret(kube, "ops", "creds")
	s.Start(t.Context(), func() { changes <- struct{}{} })
	if k := s.Key(providers.RunPod); k != "" {
		t.Fatalf("key %q before the Secret exists, want none", k)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(t.Context(), 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return cond(), nil
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	expectChange := func(what string) {
		t.Helper()
		select {
		case <-changes:
		case <-time.After(10 * time.Second):
			t.Fatalf("no onChange for %s", what)
		}
	}

	ctx := t.Context()
	if _, err := kube.CoreV1().Secrets("ops").Create(ctx, secret(map[string]string{providers.RunPod: "old"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectChange("the creation")
	waitFor("the created key", func() bool { return s.Key(providers.RunPod) == "old" })
	if _, err := kube.CoreV1().Secrets("ops").Update(ctx, secret(map[string]string{providers.RunPod: "new"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectChange("the update")
	waitFor("the rotated key", func() bool { return s.Key(providers.RunPod) == "new" })
	t.Setenv("RUNPOD_API_KEY", "env")
	if err := kube.CoreV1().Secrets("ops").Delete(ctx, "creds", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the environment's key once the Secret is gone", func() bool { return s.Key(providers.RunPod) == "env" })
}

func TestEnvVar(t *testing.T) {
	want := map[string]string{providers.LambdaLabs: "LAMBDA_API_KEY", providers.RunPod: "RUNPOD_API_KEY", providers.Paperspace: "PAPERSPACE_API_KEY", providers.VastAI: "VAST_API_KEY", "aws": ""}
	for p, env := range want {
		if got := EnvVar(p); got != env {
			t.Errorf("EnvVar(%q) = %q, want %q", p, got, env)
		}
	}
	if len(Providers) != 4 {
		t.Errorf("Providers %v, want the four providers", Providers)
	}
	for _, p := range Providers {
		if EnvVar(p) == "" {
			t.Errorf("provider %s has no environment variable", p)
		}
	}
}

func TestReadFile(t *testing.T) {
	write := func(t *testing.T, content string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "creds")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	got, err := ReadFile(write(t, "# comment\n\nLAMBDA_API_KEY = a1 \nexport RUNPOD_API_KEY=\"r 2\"\npaperspace='p3'\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{providers.LambdaLabs: "a1", providers.RunPod: "r 2", providers.Paperspace: "p3"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}

	for _, tt := range []struct{ content, want, secret string }{
		{content: "LAMBDA_API_KEY\n", want: ":1: want KEY=VALUE"},
		{content: "# ok\nAWS_SECRET=hunter2-secret\n", want: `:2: unknown key "AWS_SECRET"`, secret: "hunter2"},
	} {
		_, err := ReadFile(write(t, tt.content))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.content, err, tt.want)
		}
		if tt.secret != "" && err != nil && strings.Contains(err.Error(), tt.secret) {
			t.Errorf("error %q carries the value", err)
		}
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "reading the credentials file") {
		t.Errorf("missing file: error %v", err)
	}
}
