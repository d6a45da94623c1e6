package pricewatch

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
)

// recorder is a PriceSetter that hands every table it is given to the test.
type recorder chan *paperspace.PriceTable

func (r recorder) SetPrices(t *paperspace.PriceTable) { r <- t }

func (r recorder) next(t *testing.T, what string) *paperspace.PriceTable {
	t.Helper()
	select {
	case table := <-r:
		return table
	case <-time.After(10 * time.Second):
		t.Fatalf("no SetPrices call for %s", what)
		return nil
	}
}

func configMap(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prices", Namespace: "ops"}, Data: data}
}

// TestWatch: each valid version of the ConfigMap is applied over the shipped
// table, an invalid one is skipped (the next call is the next valid
// version's), and deletion restores the shipped table.
func TestWatch(t *testing.T) {
	ctx := t.Context()
	kube := fake.NewClientset()
	target := make(recorder, 10)
	if err := Watch(ctx, kube, "ops", "prices", target); err != nil {
		t.Fatal(err)
	}
	shipped, _ := paperspace.DefaultPriceTable().Price("H100")

	if _, err := kube.CoreV1().ConfigMaps("ops").Create(ctx, configMap(map[string]string{"H100": "4.5"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	table := target.next(t, "the created ConfigMap")
	if p, _ := table.Price("H100"); p != 4.5 || !strings.Contains(table.SourceOf("H100"), "configmap:ops/prices") {
		t.Errorf("H100 at %v from %q, want 4.5 from configmap:ops/prices", p, table.SourceOf("H100"))
	}
	if p, _ := table.Price("H100x8"); p != 47.60 {
		t.Errorf("H100x8 at %v, want the shipped 47.60 (not overridden)", p)
	}

	for _, data := range []map[string]string{{"H100": "cheap"}, {"H100": "3.25"}} {
		if _, err := kube.CoreV1().ConfigMaps("ops").Update(ctx, configMap(data), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	table = target.next(t, "the valid update")
	if table == nil {
		t.Fatal("the invalid update reset the table; want it skipped")
	}
	if p, _ := table.Price("H100"); p != 3.25 {
		t.Errorf("H100 at %v after the updates, want 3.25 (the invalid version skipped)", p)
	}

	if err := kube.CoreV1().ConfigMaps("ops").Delete(ctx, "prices", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if table := target.next(t, "the deletion"); table != nil {
		p, _ := table.Price("H100")
		t.Errorf("deletion set a table (H100 at %v), want nil: the shipped table (%v)", p, shipped)
	}
}

// TestFindPaperspace: the real adapter is a PriceSetter, and Find
// picks it out of the enabled providers.
func TestFindPaperspace(t *testing.T) {
	key := func() string { return "k" }
	ps, err := paperspace.New(paperspace.Config{BaseURL: "http://127.0.0.1:1/v1", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	la, err := lambda.New(lambda.Config{BaseURL: "http://127.0.0.1:1", Key: key, SSHKeyName: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if got := Find([]providers.Provider{la, ps}); got != PriceSetter(ps) {
		t.Errorf("Find = %v, want the Paperspace adapter", got)
	}
	if got := Find([]providers.Provider{la}); got != nil {
		t.Errorf("Find without Paperspace = %v, want nil", got)
	}
}
