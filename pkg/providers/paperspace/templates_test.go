package paperspace_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	simpaperspace "github.com/solanyn/gpu-operator/pkg/cloudsim/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
)

// Over HTTP: each machine type is created from the GPU template the rule
// picks out of GET /os-templates, never from the CPU image t0nspur5, and
// the templates are listed once per catalog refresh, not per launch.
func TestLaunchUsesTheGPUTemplateOfItsMachineType(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: simpaperspace.DefaultCatalog(-1)}, nil)
	ctx := context.Background()
	if _, err := e.a.Offers(ctx); err != nil {
		t.Fatal(err)
	}
	for mt, want := range map[string]string{
		"A100-80Gx8": "tvimtol9", // ML-in-a-Box 22.04, headless, beats the 22.04 desktop image
		"H100":       "tvimtol9",
		"A6000":      "t17d1a6i", // only the GPU desktop image (and Windows) list it
		"V100-32G":   "t17d1a6i", // 22.04 beats ML-in-a-Box 20.04
	} {
		in, err := e.a.Launch(ctx, launchReq("gpur-tmpl-"+strings.ToLower(mt), mt, "ny2", "#!/bin/bash\necho hi\n"))
		if err != nil {
			t.Fatalf("%s: %v", mt, err)
		}
		if got := e.sim.TemplateOf(in.ID); got != want {
			t.Errorf("%s created from %q, want %q", mt, got, want)
		}
	}
	if n := e.sim.Core().Counters().Requests["GET /v1/os-templates"]; n != 1 {
		t.Errorf("os-templates listed %d times for one refresh and four launches, want 1", n)
	}
	if _, err := e.a.Offers(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.sim.Core().Counters().Requests["GET /v1/os-templates"]; n != 2 {
		t.Errorf("os-templates listed %d times after two refreshes, want 2", n)
	}
}

// A launch before any catalog refresh lists the templates itself, once.
func TestLaunchBeforeAnyRefreshListsTemplates(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("H100x8", "ams1", -1)}}, nil)
	ctx := context.Background()
	for i := range 2 {
		in, err := e.a.Launch(ctx, launchReq("gpur-first-"+string(rune('a'+i)), "H100x8", "ams1", ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := e.sim.TemplateOf(in.ID); got != "tvimtol9" {
			t.Fatalf("created from %q", got)
		}
	}
	if n := e.sim.Core().Counters().Requests["GET /v1/os-templates"]; n != 1 {
		t.Errorf("os-templates listed %d times, want 1", n)
	}
}

// A priced GPU machine type that no Linux GPU template lists gets no offer
// (and no availability calls), with the reason in Dropped; launching it is
// refused before anything is created.
func TestMachineTypeWithoutGPUTemplateHasNoOffer(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: simpaperspace.DefaultCatalog(-1)}, nil)
	var ts []simpaperspace.Template
	for _, tmpl := range simpaperspace.DefaultTemplates() {
		switch tmpl.ID {
		case "t17d1a6i": // the GPU image: keep it, without A6000
			tmpl.MachineTypes = slices.DeleteFunc(slices.Clone(tmpl.MachineTypes), func(mt string) bool { return mt == "A6000" })
		case "t0nspur5": // the CPU image: make it claim A6000
			tmpl.MachineTypes = append(slices.Clone(tmpl.MachineTypes), "A6000")
		}
		ts = append(ts, tmpl) // the Windows GPU image still lists A6000
	}
	e.sim.SetTemplates(ts)
	ctx := context.Background()
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findOffer(offers, "A6000", "ny2"); ok {
		t.Fatal("A6000 has an offer without a Linux GPU template")
	}
	if _, ok := findOffer(offers, "A6000x2", "ny2"); !ok {
		t.Fatal("A6000x2 lost its offer")
	}
	if len(offers) != 18*len(paperspace.Regions) {
		t.Errorf("%d offers, want %d (18 templated GPU types x 3 regions)", len(offers), 18*len(paperspace.Regions))
	}
	if n := e.sim.Core().Counters().Requests["GET /v1/machine-availability"]; n != 18*len(paperspace.Regions) {
		t.Errorf("%d availability calls, want none for A6000", n)
	}
	dropped := e.a.Dropped()
	if len(dropped) != 1 || !strings.Contains(dropped["A6000"], "no Linux GPU OS template lists machine type A6000") {
		t.Fatalf("Dropped() = %v, want A6000 with its reason", dropped)
	}
	_, err = e.a.Launch(ctx, launchReq("gpur-a6000-0", "A6000", "ny2", "#!/bin/bash\n"))
	wantClass(t, err, providers.ClassInvalid, 0)
	if c := e.sim.Core().Counters().Requests; c["POST /v1/startup-scripts"] != 0 || c["POST /v1/machines"] != 0 {
		t.Fatalf("requests %v: a refused launch created something", c)
	}

	// The template comes back: so does the offer.
	e.sim.SetTemplates(simpaperspace.DefaultTemplates())
	offers, err = e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findOffer(offers, "A6000", "ny2"); !ok || len(e.a.Dropped()) != 0 {
		t.Fatalf("A6000 offer %v, dropped %v after its template came back", ok, e.a.Dropped())
	}
}

// A configured TemplateID is used for every type with no template listing;
// the CPU image is refused for a GPU type (the simulator's stand-in for the
// real API, see its checkTemplateLocked) as an invalid request.
func TestConfiguredTemplateID(t *testing.T) {
	e := newEnvWith(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("H100", "ny2", -1)}}, nil,
		func(c *paperspace.Config) { c.TemplateID = "t0nspur5" })
	ctx := context.Background()
	if _, err := e.a.Offers(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := e.a.Launch(ctx, launchReq("gpur-cpu-0", "H100", "ny2", "#!/bin/bash\n"))
	pe := wantClass(t, err, providers.ClassInvalid, 400)
	if !strings.Contains(pe.Message, "t0nspur5") {
		t.Errorf("refusal %q does not name the template", pe.Message)
	}
	if n := e.sim.Core().Counters().Requests["GET /v1/os-templates"]; n != 0 {
		t.Errorf("os-templates listed %d times with a configured template", n)
	}
	if got := e.sim.Scripts(); len(got) != 0 {
		t.Errorf("the refused create left its startup script: %+v", got)
	}
}

// A refresh whose template listing fails uses the last good listing; with
// none, it fails. An empty listing drops every type.
func TestTemplateListingFailure(t *testing.T) {
	var failTemplates atomic.Bool
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("H100", "ny2", -1)}}, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/os-templates" && failTemplates.Load() {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = w.Write([]byte(`{"message":"An unexpected error occurred","code":"INTERNAL_SERVER_ERROR"}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	ctx := context.Background()
	failTemplates.Store(true)
	if _, err := e.a.Offers(ctx); !providers.IsClass(err, providers.ClassTransient) {
		t.Fatalf("first refresh without templates: %v, want transient", err)
	}
	if n := e.sim.Core().Counters().Requests["GET /v1/machine-availability"]; n != 0 {
		t.Fatalf("%d availability calls without templates", n)
	}
	failTemplates.Store(false)
	if _, err := e.a.Offers(ctx); err != nil {
		t.Fatal(err)
	}
	failTemplates.Store(true)
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatalf("refresh with the template listing failing after a good one: %v", err)
	}
	if o, ok := findOffer(offers, "H100", "ny2"); !ok || !o.Available {
		t.Fatalf("H100 offer %+v (%v), want it from the last good listing", o, ok)
	}
	failTemplates.Store(false)
	e.sim.SetTemplates(nil)
	offers, err = e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(offers) != 0 || e.a.Dropped()["H100"] == "" {
		t.Fatalf("an empty template listing: %d offers, dropped %v", len(offers), e.a.Dropped())
	}
}

func reversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func TestChooseTemplate(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 1, d, 0, 0, 0, 0, time.UTC) }
	tmpl := func(id, name, agent, os string, created int, types ...string) paperspace.Template {
		return paperspace.Template{ID: id, Name: name, AgentType: agent, OS: os, Created: day(created), MachineTypes: types}
	}
	cases := []struct {
		name      string
		templates []paperspace.Template
		want      string
	}{
		{"cpu image never", []paperspace.Template{tmpl("t0nspur5", "prod-u22-cpu-241018", "LinuxHeadless", "Ubuntu 22.04 Server", 1, "H100")}, ""},
		{"windows never", []paperspace.Template{tmpl("tw", "w22-gpu-220727", "WindowsDesktop", "Windows 10 (Server 2022)", 1, "H100")}, ""},
		{"not listed", []paperspace.Template{tmpl("tg", "prod-u22-gpu", "LinuxDesktop", "Ubuntu 22.04 Desktop", 1, "A6000")}, ""},
		{"ubuntu first", []paperspace.Template{
			tmpl("tc", "centos-gpu", "LinuxHeadless", "CentOS 7 Server", 9, "H100"),
			tmpl("tu", "prod-u20-gpu", "LinuxDesktop", "Ubuntu 20.04 Desktop", 1, "H100")}, "tu"},
		{"newer release first", []paperspace.Template{
			tmpl("t20", "mliab-u20", "LinuxHeadless", "Ubuntu 20.04", 9, "H100"),
			tmpl("t22", "prod-u22-gpu", "LinuxDesktop", "Ubuntu 22.04 Desktop", 1, "H100")}, "t22"},
		{"headless first", []paperspace.Template{
			tmpl("td", "prod-u22-gpu", "LinuxDesktop", "Ubuntu 22.04 Desktop", 9, "H100"),
			tmpl("th", "mliab-u22", "LinuxHeadless", "Ubuntu 22.04", 1, "H100")}, "th"},
		{"newest build first", []paperspace.Template{
			tmpl("told", "mliab-u22-241101", "LinuxHeadless", "Ubuntu 22.04", 1, "H100"),
			tmpl("tnew", "mliab-u22-241108", "LinuxHeadless", "Ubuntu 22.04", 8, "H100")}, "tnew"},
		{"then smallest id", []paperspace.Template{
			tmpl("tb", "mliab-u22", "LinuxHeadless", "Ubuntu 22.04", 1, "H100"),
			tmpl("ta", "mliab-u22", "LinuxHeadless", "Ubuntu 22.04", 1, "H100")}, "ta"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, order := range [][]paperspace.Template{c.templates, reversed(c.templates)} {
				got, why, ok := paperspace.ChooseTemplate(order, "H100")
				if ok != (c.want != "") || got.ID != c.want {
					t.Fatalf("ChooseTemplate = %q, %v (%s), want %q", got.ID, ok, why, c.want)
				}
				if !ok && why == "" {
					t.Fatal("no template and no reason")
				}
			}
		})
	}
}
