package paperspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace/paperspaceapi"
)

// Startup scripts. A machine's bootstrap (its join secrets included) goes to
// Paperspace as a startup script named after the machine, and Paperspace
// keeps a script until it is deleted. The adapter deletes a machine's
// scripts, found by that name:
//
//   - in Launch, at once, when the machine create is refused definitely
//     (any class but ClassTransient: nothing was created);
//   - in Terminate, once the machine delete has been accepted;
//   - in a sweep that Instances runs at most once per ScriptSweepInterval,
//     after a complete machine listing: every script whose name carries the
//     operator's prefix, that is older than scriptGrace, is named after no
//     listed machine and is assigned to none. It deletes what a crash
//     between a machine delete and its script delete, or a failed script
//     delete, left behind.

// scriptGrace is how old a script must be before the sweep deletes it: a
// Launch creates the script first and the machine after it, and a script
// younger than this may belong to a create still in flight.
const scriptGrace = 10 * time.Minute

// maxSweepDeletes bounds the deletes of one sweep, so that one Instances
// call stays short; the next sweep deletes the rest.
const maxSweepDeletes = 50

// DefaultScriptSweepInterval is how often Instances sweeps startup scripts.
const DefaultScriptSweepInterval = 10 * time.Minute

// Script is one startup script of GET /startup-scripts.
type Script struct {
	ID       string
	Name     string
	Created  time.Time
	Deleted  bool
	Assigned []string // machine ids
}

// ScriptPage is one page of GET /startup-scripts.
type ScriptPage struct {
	Scripts  []Script
	HasMore  bool
	NextPage string
}

// DecodeScriptPage reads a GET /startup-scripts body.
func DecodeScriptPage(body []byte) (ScriptPage, error) {
	var r paperspaceapi.StartupScriptsListResponse
	if err := json.Unmarshal(body, &r.JSON200); err != nil {
		return ScriptPage{}, fmt.Errorf("decode startup scripts: %w", err)
	}
	if r.JSON200 == nil {
		return ScriptPage{}, errors.New("decode startup scripts: empty body")
	}
	page := ScriptPage{HasMore: r.JSON200.HasMore}
	if r.JSON200.NextPage != nil {
		page.NextPage = *r.JSON200.NextPage
	}
	for _, it := range r.JSON200.Items {
		if it.Id == "" {
			return ScriptPage{}, errors.New("decode startup scripts: script without id")
		}
		page.Scripts = append(page.Scripts, Script{ID: it.Id, Name: it.Name, Created: it.DtCreated,
			Deleted: it.DtDeleted != nil, Assigned: it.AssignedMachineIds})
	}
	return page, nil
}

// listScripts pages through GET /startup-scripts, only the scripts named
// name when name is not empty.
func (a *Adapter) listScripts(ctx context.Context, name string) ([]Script, error) {
	const op = "list startup scripts"
	limit := pageSize
	params := &paperspaceapi.StartupScriptsListParams{Limit: &limit}
	if name != "" {
		params.Name = &name
	}
	var out []Script
	seen := map[string]bool{}
	for range maxPages {
		body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
			return a.api.StartupScriptsList(ctx, params)
		})
		if err != nil {
			return nil, err
		}
		page, err := DecodeScriptPage(body)
		if err != nil {
			return nil, decodeError(op, err)
		}
		for _, s := range page.Scripts {
			// The name filter is the server's; check it, it decides a delete.
			if !s.Deleted && (name == "" || s.Name == name) {
				out = append(out, s)
			}
		}
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
		Message: fmt.Sprintf("more than %d pages of startup scripts", maxPages)}
}

// deleteScript deletes one startup script; a script that does not exist is
// success.
func (a *Adapter) deleteScript(ctx context.Context, id string) error {
	_, err := a.calls.Call(ctx, "delete startup script", func(ctx context.Context) (*http.Response, error) {
		return a.api.StartupScriptsDelete(ctx, id)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// deleteScriptsNamed deletes every startup script named after machine name
// (only names with the operator's prefix: nothing else is the adapter's).
func (a *Adapter) deleteScriptsNamed(ctx context.Context, name string) error {
	if !providers.IsOperatorMachine(name) {
		return nil
	}
	scripts, err := a.listScripts(ctx, name)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range scripts {
		if err := a.deleteScript(ctx, s.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		klog.FromContext(ctx).V(2).Info("deleted startup script", "provider", providers.Paperspace, "script", s.ID, "machine", name)
	}
	return errors.Join(errs...)
}

// maybeSweepScripts runs the sweep if one is due and none is running;
// machines is a complete listing (every machine, the operator's or not).
// Its failures are logged: they never fail the listing.
func (a *Adapter) maybeSweepScripts(ctx context.Context, machines []Machine) {
	if a.sweepEvery < 0 || !a.sweeping.TryLock() {
		return
	}
	defer a.sweeping.Unlock()
	now := a.clock.Now()
	a.mu.Lock()
	due := a.lastSweep.IsZero() || now.Sub(a.lastSweep) >= a.sweepEvery
	a.mu.Unlock()
	if !due {
		return
	}
	n, err := a.SweepScripts(ctx, machines)
	a.mu.Lock()
	a.lastSweep = now
	a.mu.Unlock()
	logger := klog.FromContext(ctx)
	if err != nil {
		logger.Info("Warning: startup script sweep incomplete; the next one retries", "provider", providers.Paperspace, "deleted", n, "err", err)
	} else if n > 0 {
		logger.V(2).Info("startup scripts of machines that are gone deleted", "provider", providers.Paperspace, "deleted", n)
	}
}

// SweepScripts deletes the operator's startup scripts whose machine is gone
// (see the package's startup script notes), given a complete machine
// listing, and returns how many it deleted.
func (a *Adapter) SweepScripts(ctx context.Context, machines []Machine) (int, error) {
	names := make(map[string]bool, len(machines))
	ids := make(map[string]bool, len(machines))
	for _, m := range machines {
		names[m.Name] = true
		ids[m.ID] = true
	}
	scripts, err := a.listScripts(ctx, "")
	if err != nil {
		return 0, err
	}
	now := a.clock.Now()
	deleted := 0
	var errs []error
	for _, s := range scripts {
		if deleted == maxSweepDeletes {
			break
		}
		if !providers.IsOperatorMachine(s.Name) || names[s.Name] || now.Sub(s.Created) < scriptGrace ||
			slices.ContainsFunc(s.Assigned, func(id string) bool { return ids[id] }) {
			continue
		}
		if err := a.deleteScript(ctx, s.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted++
	}
	return deleted, errors.Join(errs...)
}
