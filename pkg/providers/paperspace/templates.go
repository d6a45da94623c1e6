package paperspace

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace/paperspaceapi"
)

// OS templates. A machine is created from an OS template, and a GPU machine
// type needs a GPU template: t0nspur5, long the usual default, is the CPU
// image "prod-u22-cpu Ubuntu 22.04 Server". Template IDs drift between
// Paperspace's lists, so the adapter reads GET /os-templates (each
// template's availableMachineTypes says where it may run) once per catalog
// refresh and chooses per machine type with ChooseTemplate.

// Template is one OS template of GET /os-templates.
type Template struct {
	ID        string
	Name      string
	AgentType string
	// OS is operatingSystemLabel ("Ubuntu 22.04 Server").
	OS      string
	Created time.Time
	// MachineTypes are the machine type labels the template is available on
	// (availableMachineTypes with isAvailable).
	MachineTypes []string
}

// ChooseTemplate picks the OS template for a GPU machine type, or says why
// there is none. The rule, deterministic for a given list:
//
//  1. Candidates list the machine type in availableMachineTypes with
//     isAvailable true, run Linux (not a Windows agent type or OS label:
//     the bootstrap is a bash script), and are GPU templates: a template
//     whose name has a "cpu" part (Paperspace names its CPU images
//     prod-u22-cpu-..., prod-u20-cpu-...) is never used for a GPU type.
//  2. Ubuntu (operatingSystemLabel starting "Ubuntu") before other Linux.
//  3. The newer Ubuntu release first (22.04 before 20.04).
//  4. A headless agent (LinuxHeadless) before a desktop one: a node needs
//     no desktop.
//  5. The newest dtCreated (Paperspace publishes rebuilt images as new
//     templates), then the smallest id.
func ChooseTemplate(templates []Template, machineType string) (Template, string, bool) {
	var candidates []Template
	for _, t := range templates {
		if slices.Contains(t.MachineTypes, machineType) && isLinux(t) && !isCPUTemplate(t) {
			candidates = append(candidates, t)
		}
	}
	if len(candidates) == 0 {
		return Template{}, fmt.Sprintf("no Linux GPU OS template lists machine type %s as available (of %d templates listed by GET /os-templates)",
			machineType, len(templates)), false
	}
	return slices.MinFunc(candidates, compareTemplates), "", true
}

// compareTemplates orders templates best first (ChooseTemplate's rule).
func compareTemplates(a, b Template) int {
	ua, va := ubuntuVersion(a.OS)
	ub, vb := ubuntuVersion(b.OS)
	return cmp.Or(
		boolFirst(ua, ub),
		-cmp.Compare(va, vb),
		boolFirst(a.AgentType == "LinuxHeadless", b.AgentType == "LinuxHeadless"),
		-a.Created.Compare(b.Created),
		cmp.Compare(a.ID, b.ID),
	)
}

// boolFirst orders true before false.
func boolFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	default:
		return 1
	}
}

// ubuntuVersion reads "Ubuntu 22.04 Server" as (true, 2204).
func ubuntuVersion(os string) (bool, int) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(os), "Ubuntu")
	if !ok {
		return false, 0
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return true, 0
	}
	major, minor, _ := strings.Cut(f[0], ".")
	mj, err1 := strconv.Atoi(major)
	mn, err2 := strconv.Atoi(minor)
	if err1 != nil || (minor != "" && err2 != nil) {
		return true, 0
	}
	return true, mj*100 + mn
}

func isLinux(t Template) bool {
	return !strings.HasPrefix(strings.ToLower(t.AgentType), "windows") && !strings.HasPrefix(strings.ToLower(t.OS), "windows")
}

func isCPUTemplate(t Template) bool {
	return slices.Contains(strings.FieldsFunc(strings.ToLower(t.Name), func(r rune) bool {
		return r == '-' || r == '_' || r == ' ' || r == '.'
	}), "cpu")
}

// TemplatePage is one page of GET /os-templates.
type TemplatePage struct {
	Templates []Template
	HasMore   bool
	NextPage  string
}

// DecodeTemplatePage reads a GET /os-templates body.
func DecodeTemplatePage(body []byte) (TemplatePage, error) {
	var r paperspaceapi.OsTemplatesListResponse
	if err := json.Unmarshal(body, &r.JSON200); err != nil {
		return TemplatePage{}, fmt.Errorf("decode os templates: %w", err)
	}
	if r.JSON200 == nil {
		return TemplatePage{}, errors.New("decode os templates: empty body")
	}
	page := TemplatePage{HasMore: r.JSON200.HasMore}
	if r.JSON200.NextPage != nil {
		page.NextPage = *r.JSON200.NextPage
	}
	for _, it := range r.JSON200.Items {
		if it.Id == "" {
			return TemplatePage{}, errors.New("decode os templates: template without id")
		}
		t := Template{ID: it.Id, Name: it.Name, AgentType: it.AgentType, OS: it.OperatingSystemLabel, Created: it.DtCreated}
		for _, mt := range it.AvailableMachineTypes {
			if mt.IsAvailable {
				t.MachineTypes = append(t.MachineTypes, mt.MachineTypeLabel)
			}
		}
		page.Templates = append(page.Templates, t)
	}
	return page, nil
}

// listTemplates pages through GET /os-templates.
func (a *Adapter) listTemplates(ctx context.Context) ([]Template, error) {
	const op = "list os templates"
	limit := pageSize
	params := &paperspaceapi.OsTemplatesListParams{Limit: &limit}
	var out []Template
	seen := map[string]bool{}
	for range maxPages {
		body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
			return a.api.OsTemplatesList(ctx, params)
		})
		if err != nil {
			return nil, err
		}
		page, err := DecodeTemplatePage(body)
		if err != nil {
			return nil, decodeError(op, err)
		}
		out = append(out, page.Templates...)
		if !page.HasMore || page.NextPage == "" {
			return out, nil
		}
		if seen[page.NextPage] {
			return nil, &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient,
				Message: "the list cursor " + page.NextPage + " repeats"}
		}
		seen[page.NextPage] = true
		params.After = &page.NextPage
	}
	return nil, &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient,
		Message: fmt.Sprintf("more than %d pages of OS templates", maxPages)}
}

// refreshTemplates lists the OS templates and keeps them for Launch. A
// failed call keeps the last good list and returns it with the error, so a
// caller that has one can go on.
func (a *Adapter) refreshTemplates(ctx context.Context) ([]Template, error) {
	ts, err := a.listTemplates(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		return a.templates, err
	}
	if ts == nil {
		ts = []Template{} // listed, and empty: not listed again by templateFor
	}
	a.templates = ts
	return ts, nil
}

// templateFor is the OS template to create machineType from: the
// configured TemplateID, or ChooseTemplate over the templates of the latest
// refresh (listed now if none was ever listed).
func (a *Adapter) templateFor(ctx context.Context, machineType string) (string, error) {
	if a.templateID != "" {
		return a.templateID, nil
	}
	a.mu.Lock()
	ts := a.templates
	a.mu.Unlock()
	if ts == nil {
		var err error
		if ts, err = a.refreshTemplates(ctx); err != nil && ts == nil {
			return "", err
		}
	}
	t, why, ok := ChooseTemplate(ts, machineType)
	if !ok {
		return "", &providers.Error{Provider: providers.Paperspace, Operation: "launch", Class: providers.ClassInvalid, Message: why}
	}
	return t.ID, nil
}
