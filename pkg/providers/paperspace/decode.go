package paperspace

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace/paperspaceapi"
)

// The decoders read 2xx bodies into the generated response types, whose
// 200 bodies are anonymous structs reached through the JSON200 field.

// NormalizeState maps a Paperspace machine state onto the normalized states,
// for a machine that has been seen started. Paperspace has no spot capacity
// and no preemption signal; a machine that is off or stopping without having
// been deleted was shut down under us (auto-shutdown, vm-shutdown-force, a
// user in the console) and will not come back by itself, so it is reported
// interrupted and the operator relaunches:
//
//	deleted (dtDeleted set)                 -> terminated
//	provisioning                            -> pending
//	starting, restarting, upgrading         -> booting
//	ready, serviceready                     -> running
//	off, stopping                           -> interrupted
//	anything else (a state added later)     -> booting: wait, do not kill
//
// A machine that is off and was never seen started is a capacity miss, not
// an interruption: Instances reports it StateFailed (see NeverStarted).
func NormalizeState(state string, deleted bool) providers.InstanceState {
	if deleted {
		return providers.StateTerminated
	}
	switch state {
	case "provisioning":
		return providers.StatePending
	case "ready", "serviceready":
		return providers.StateRunning
	case "off", "stopping":
		return providers.StateInterrupted
	default:
		return providers.StateBooting
	}
}

// Started reports whether a machine in this native state has left off since
// its creation: anything but off and provisioning (a machine is
// provisioning before it first starts) counts.
func Started(state string) bool { return state != "off" && state != "provisioning" }

// NeverStartedState is the NativeState of a machine that stayed off after
// create without ever starting: Paperspace's capacity miss.
const NeverStartedState = "off (never started after create: no capacity)"

// NativeRegion reads a region as the API writes it: the spec's short codes
// (ny2, ca1, ams1) are kept, and the display names of the legacy API and of
// older answers ("East Coast (NY2)", "West Coast (CA1)", "Europe (AMS1)")
// become the code in parentheses, lower-cased. Anything else is returned
// lower-cased and trimmed.
func NativeRegion(region string) string {
	r := strings.TrimSpace(region)
	if open := strings.LastIndexByte(r, '('); open >= 0 && strings.HasSuffix(r, ")") {
		if code := strings.TrimSpace(r[open+1 : len(r)-1]); code != "" {
			r = code
		}
	}
	return strings.ToLower(r)
}

// Machine is one machine of a listing: its normalized instance (State as
// NormalizeState reads it) and what the adapter needs beyond it.
type Machine struct {
	providers.Instance
	// Created is dtCreated.
	Created time.Time
	// Deleted says dtDeleted is set.
	Deleted bool
}

// instance builds the normalized instance from the fields every machine
// shape of the spec has.
func instance(id, name, state, machineType, region string, publicIP *string, deleted *time.Time) providers.Instance {
	in := providers.Instance{
		Provider:       providers.Paperspace,
		ID:             id,
		Name:           name,
		InstanceType:   machineType,
		ProviderRegion: NativeRegion(region),
		State:          NormalizeState(state, deleted != nil),
		NativeState:    state,
	}
	if publicIP != nil {
		in.PublicIP = *publicIP
	}
	return in
}

// MachinePage is one page of GET /machines.
type MachinePage struct {
	// Machines are all machines on the page, the operator's or not.
	Machines []Machine
	// HasMore says another page follows; NextPage is its cursor (?after=).
	HasMore  bool
	NextPage string
}

// DecodeMachinePage reads a GET /machines body.
func DecodeMachinePage(body []byte) (MachinePage, error) {
	var r paperspaceapi.MachinesListResponse
	if err := json.Unmarshal(body, &r.JSON200); err != nil {
		return MachinePage{}, fmt.Errorf("decode machine list: %w", err)
	}
	if r.JSON200 == nil {
		return MachinePage{}, errors.New("decode machine list: empty body")
	}
	page := MachinePage{HasMore: r.JSON200.HasMore, Machines: make([]Machine, 0, len(r.JSON200.Items))}
	if r.JSON200.NextPage != nil {
		page.NextPage = *r.JSON200.NextPage
	}
	for _, m := range r.JSON200.Items {
		if m.Id == "" {
			return MachinePage{}, errors.New("decode machine list: machine without id")
		}
		page.Machines = append(page.Machines, Machine{
			Instance: instance(m.Id, m.Name, string(m.State), m.MachineType, m.Region, m.PublicIp, m.DtDeleted),
			Created:  m.DtCreated, Deleted: m.DtDeleted != nil,
		})
	}
	return page, nil
}

// DecodeMachine reads a GET /machines/{id} body.
func DecodeMachine(body []byte) (providers.Instance, error) {
	var r paperspaceapi.MachinesGetResponse
	if err := json.Unmarshal(body, &r.JSON200); err != nil {
		return providers.Instance{}, fmt.Errorf("decode machine: %w", err)
	}
	m := r.JSON200
	if m == nil || m.Id == "" {
		return providers.Instance{}, errors.New("decode machine: no machine id")
	}
	return instance(m.Id, m.Name, string(m.State), m.MachineType, m.Region, m.PublicIp, m.DtDeleted), nil
}

// DecodeDeletedMachine reads a DELETE /machines/{id} body, {event, data}:
// data is the machine being deleted.
func DecodeDeletedMachine(body []byte) (providers.Instance, error) {
	var r paperspaceapi.MachinesDeleteResponse
	if err := json.Unmarshal(body, &r.JSON200); err != nil {
		return providers.Instance{}, fmt.Errorf("decode deleted machine: %w", err)
	}
	if r.JSON200 == nil || r.JSON200.Data.Id == "" {
		return providers.Instance{}, errors.New("decode deleted machine: no machine id")
	}
	m := r.JSON200.Data
	return instance(m.Id, m.Name, string(m.State), m.MachineType, m.Region, m.PublicIp, m.DtDeleted), nil
}

// DecodeCreatedMachine reads a POST /machines body, {event, data}: data is
// the new machine.
func DecodeCreatedMachine(body []byte) (providers.Instance, error) {
	var r paperspaceapi.MachinesCreateResponse
	if err := json.Unmarshal(body, &r.JSON200); err != nil {
		return providers.Instance{}, fmt.Errorf("decode created machine: %w", err)
	}
	if r.JSON200 == nil || r.JSON200.Data.Id == "" {
		return providers.Instance{}, errors.New("decode created machine: no machine id")
	}
	m := r.JSON200.Data
	return instance(m.Id, m.Name, string(m.State), m.MachineType, m.Region, m.PublicIp, m.DtDeleted), nil
}

// DecodeAvailability reads a GET /machine-availability body, {available}.
func DecodeAvailability(body []byte) (bool, error) {
	var r paperspaceapi.MachineAvailabilityListResponse
	if err := json.Unmarshal(body, &r.JSON200); err != nil {
		return false, fmt.Errorf("decode machine availability: %w", err)
	}
	if r.JSON200 == nil {
		return false, errors.New("decode machine availability: empty body")
	}
	return r.JSON200.Available, nil
}

// decodeStartupScriptID reads the id out of a POST /startup-scripts body.
func decodeStartupScriptID(body []byte) (string, error) {
	var r paperspaceapi.StartupScriptsCreateResponse
	if err := json.Unmarshal(body, &r.JSON200); err != nil {
		return "", fmt.Errorf("decode startup script: %w", err)
	}
	if r.JSON200 == nil || r.JSON200.Id == "" {
		return "", errors.New("decode startup script: no id")
	}
	return r.JSON200.Id, nil
}
