package vastai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/sshboot"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/vastaiapi"
)

// Runtypes (the spec's createInstance runtype enum).
const (
	// runtypeVM: VMs support "only SSH launch mode" (virtual-machines.mdx);
	// ssh_direct provisions port 22 on the instance itself (creating-
	// instances-with-api.mdx), so the operator's SSH goes straight to it.
	runtypeVM = vastaiapi.CreateInstanceJSONBodyRuntype("ssh_direct")
	// runtypeContainer keeps the image's ENTRYPOINT and passes the
	// container's args to it; no SSH or Jupyter is injected.
	runtypeContainer = vastaiapi.CreateInstanceJSONBodyRuntype("args")
)

// createBody is createInstance's body with env as the JSON object Vast.ai's
// guide documents ("the env field must be a JSON object (dict), not a
// Docker flag string": creating-instances-with-api.mdx, "My environment
// variables aren't taking effect"), which its CLI sends too. The spec
// types env as a Docker-flag string ("-e K=V -p 8000:8000"); the guide, the
// newer and more specific source, says that form does not take effect, so
// the object is sent (the contract suite validates the request with env in
// the spec's form; see pkg/providers/contract).
type createBody struct {
	vastaiapi.CreateInstanceJSONBody
	Env map[string]string `json:"env,omitempty"`
}

// envName is what an environment variable may be called: a name the env
// object cannot confuse with its Docker-flag keys ("-p 8000:8000").
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Launch creates one instance with one PUT /api/v0/asks/{id}/
// (createInstance) on ask req.Offer.InstanceType, labelled req.Name:
//
//   - a VM offer: {"image": VMImage, "vm": true, "runtype": "ssh_direct",
//     "label", "disk", "cancel_unavail": true}, after the operator's SSH
//     key is registered (EnsureSSHKey); req.UserData is not sent (the
//     controller delivers it over SSH);
//   - a container offer: {"image", "runtype": "args", "args": [...], "env":
//     {"NAME": "value", "-p 8080:8080": "1"}, "label", "disk",
//     "cancel_unavail": true} from req.Container;
//   - a Spot offer adds "price": req.BidPrice, the bid.
//
// cancel_unavail makes a create that cannot start at once (a bid that does
// not win) fail with 410 instead of waiting stopped. req.Tags are not sent:
// Vast.ai has no tags. It does not deduplicate: a second Launch of a name
// is a second instance. A request Vast.ai cannot take (no bid for a Spot
// offer, no container for a container offer, an env name or port it cannot
// express, no SSH key for a VM) is ClassInvalid and sends nothing. An ask
// that is gone (rented by someone else since the catalog was read: 404
// no_such_ask, 410) is ClassCapacity. A create without a definite answer
// (timeout, 5xx, an answer without new_contract) is ClassTransient: the
// instance may exist, and the controller looks for it by label.
func (a *Adapter) Launch(ctx context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	const op = "Launch"
	ask, body, err := a.createBody(req)
	if err != nil {
		return providers.Instance{}, &providers.Error{Provider: providers.VastAI, Operation: op, Class: providers.ClassInvalid, Message: err.Error()}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return providers.Instance{}, a.calls.Wrap(op, err)
	}
	vm := body.Vm != nil && *body.Vm
	if vm {
		if err := a.EnsureSSHKey(ctx); err != nil {
			return providers.Instance{}, err
		}
	}
	resp, err := a.calls.CallLaunch(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.CreateInstanceWithBody(ctx, ask, "application/json", bytes.NewReader(raw))
	})
	if err != nil {
		var pe *providers.Error
		if errors.As(err, &pe) {
			switch {
			case pe.Class == providers.ClassNotFound:
				// A create's 404 is the ask: "Offer not found or not available".
				pe.Class = providers.ClassCapacity
			case pe.Code == CodeNoSSHKeyForVM:
				a.forgetSSHKey()
			}
		}
		return providers.Instance{}, err
	}
	var created struct {
		Success     *bool        `json:"success"`
		NewContract *json.Number `json:"new_contract"`
	}
	id := int64(0)
	if err := json.Unmarshal(resp, &created); err == nil && created.NewContract != nil {
		id, _ = created.NewContract.Int64()
	}
	if id <= 0 || (created.Success != nil && !*created.Success) {
		// 2xx without an instance id: the instance may exist.
		return providers.Instance{}, a.calls.Wrap(op, fmt.Errorf("create answered without a usable new_contract: %s", providers.TruncateMessage(string(resp), 200)))
	}
	in := providers.Instance{
		Provider:       providers.VastAI,
		ID:             strconv.FormatInt(id, 10),
		Name:           req.Name,
		InstanceType:   req.Offer.InstanceType,
		ProviderRegion: req.Offer.ProviderRegion,
		Spot:           req.Offer.Capacity == providers.Spot,
		State:          providers.StatePending,
		NativeState:    "created",
	}
	if in.Spot {
		in.BidPrice = req.BidPrice
	}
	return in, nil
}

// createBody is the ask id and createInstance body of req, or why Vast.ai
// cannot run it.
func (a *Adapter) createBody(req providers.LaunchRequest) (int, createBody, error) {
	var body createBody
	ask, err := strconv.Atoi(req.Offer.InstanceType)
	switch {
	case req.Name == "":
		return 0, body, errors.New("launch needs a machine name (the instance's label)")
	case err != nil || ask <= 0:
		return 0, body, fmt.Errorf("instance type %q is not a Vast.ai offer (ask) id", req.Offer.InstanceType)
	}
	body.Label = new(req.Name)
	body.Disk = new(a.cfg.DiskGB)
	body.CancelUnavail = new(true)
	if req.Offer.Capacity == providers.Spot {
		bid := req.BidPrice
		if !(bid >= BidStep) || bid > MaxCreateBid || math.IsInf(bid, 0) {
			return 0, body, fmt.Errorf("an interruptible launch needs a bid between $%.3f and $%.0f/h (LaunchRequest.BidPrice, from BidFor), got %v", BidStep, MaxCreateBid, bid)
		}
		body.Price = new(roundDown(bid))
	}
	if providers.KindOf(req.Offer) == providers.VM {
		if req.Container != nil {
			return 0, body, errors.New("a VM offer runs no container (its bootstrap is delivered over SSH)")
		}
		if a.cfg.SSHPublicKey == nil || strings.TrimSpace(a.cfg.SSHPublicKey()) == "" {
			return 0, body, errors.New("a VM launch needs the operator's SSH public key (Config.SSHPublicKey): Vast.ai VMs take only the SSH keys registered before they are created")
		}
		body.Image = a.cfg.VMImage
		body.Vm = new(true)
		body.Runtype = new(runtypeVM)
		return ask, body, nil
	}
	c := req.Container
	switch {
	case c == nil:
		return 0, body, errors.New("a container offer needs a container to run (LaunchRequest.Container)")
	case strings.TrimSpace(c.Image) == "":
		return 0, body, errors.New("the container has no image")
	}
	body.Image = c.Image
	body.Runtype = new(runtypeContainer)
	if len(c.Args) > 0 {
		body.Args = new(append([]string(nil), c.Args...))
	}
	env := make(map[string]string, len(c.Env)+len(c.Ports))
	for k, v := range c.Env {
		if !envName.MatchString(k) {
			return 0, body, fmt.Errorf("environment variable name %q: Vast.ai takes names of letters, digits and _ (a name starting with - would be read as a Docker option)", k)
		}
		env[k] = v
	}
	for _, p := range c.Ports {
		key, err := portKey(p)
		if err != nil {
			return 0, body, err
		}
		if _, dup := env[key]; dup {
			return 0, body, fmt.Errorf("port %d is listed twice", p.Port)
		}
		env[key] = "1"
	}
	if len(env) > 0 {
		body.Env = env
	}
	return ask, body, nil
}

// portKey is the env key that maps a container port ("-p 8080:8080", the
// guide's syntax, value "1"): the same port on the host side, which Vast.ai
// maps to a public port of its own (listed in the instance's ports). HTTP
// is TCP to Vast.ai.
func portKey(p providers.Port) (string, error) {
	proto := strings.ToLower(p.Protocol)
	if p.Port < 1 || p.Port > 65535 || (proto != "" && proto != "tcp" && proto != "http") {
		return "", fmt.Errorf("port %d/%s: Vast.ai exposes ports 1-65535 over tcp (http is tcp)", p.Port, p.Protocol)
	}
	return fmt.Sprintf("-p %d:%d", p.Port, p.Port), nil
}

// EnsureSSHKey registers Config.SSHPublicKey with the account unless it is
// there already: GET /api/v0/ssh/ (getSshKeysUser; its 404, "No SSH keys
// found for the user", is an empty list), then POST /api/v0/ssh/
// (createSshKey) when the key is missing. Once the key is known to be
// registered it costs nothing, until Vast.ai says a VM create found no key
// (no_ssh_key_for_vm) or the configured key changes. Launch calls it
// before every VM create; the operator may call it at start to fail early.
func (a *Adapter) EnsureSSHKey(ctx context.Context) error {
	const op = "EnsureSSHKey"
	if a.cfg.SSHPublicKey == nil {
		return &providers.Error{Provider: providers.VastAI, Operation: op, Class: providers.ClassInvalid, Message: "no SSH public key configured"}
	}
	want := strings.TrimSpace(a.cfg.SSHPublicKey())
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(want)); err != nil {
		return &providers.Error{Provider: providers.VastAI, Operation: op, Class: providers.ClassInvalid, Message: "the SSH public key is not an authorized_keys line: " + err.Error()}
	}
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if a.registeredKey == want {
		return nil
	}
	body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		// The spec declares the Authorization header as a parameter of this
		// operation; the Caller sets it with the real key.
		return a.api.GetSshKeysUser(ctx, &vastaiapi.GetSshKeysUserParams{Authorization: "Bearer"})
	})
	switch {
	case providers.IsClass(err, providers.ClassNotFound):
		body = []byte("[]")
	case err != nil:
		return err
	}
	var keys []struct {
		Key       string  `json:"key"`
		PublicKey string  `json:"public_key"`
		DeletedAt *string `json:"deleted_at"`
	}
	if err := json.Unmarshal(body, &keys); err != nil {
		return a.calls.Wrap(op, fmt.Errorf("decoding the account's SSH keys: %w", err))
	}
	for _, k := range keys {
		if k.DeletedAt == nil && (sshboot.SameKey(k.Key, want) || sshboot.SameKey(k.PublicKey, want)) {
			a.registeredKey = want
			return nil
		}
	}
	if _, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.CreateSshKey(ctx, vastaiapi.CreateSshKeyJSONRequestBody{SshKey: want})
	}); err != nil {
		return err
	}
	a.registeredKey = want
	return nil
}

func (a *Adapter) forgetSSHKey() {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	a.registeredKey = ""
}

// pageSize is the v1 list's largest page ("Default 25, max 25").
const pageSize = 25

// maxPages bounds one listing (25,000 instances): a server whose
// next_token never ends cannot hold a poll forever.
const maxPages = 1000

// Instances lists the operator's instances (label starting with
// providers.MachineNamePrefix) with GET /api/v1/instances/ (showInstances),
// ordered by id and paged with next_token, 25 a page: one call per 25
// instances in the account (the API's page size; its filters cannot select a
// label prefix, so every instance is read and the operator's are kept).
func (a *Adapter) Instances(ctx context.Context) ([]providers.Instance, error) {
	const op = "Instances"
	var out []providers.Instance
	var after *string
	seen := map[string]bool{}
	for range maxPages {
		params := &vastaiapi.ShowInstancesParams{
			Limit:      new(pageSize),
			OrderBy:    new(`[{"col":"id","dir":"asc"}]`),
			AfterToken: after,
		}
		body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
			return a.api.ShowInstances(ctx, params)
		})
		if err != nil {
			return nil, err
		}
		var page struct {
			Instances []InstanceJSON `json:"instances"`
			NextToken *string        `json:"next_token"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, a.calls.Wrap(op, fmt.Errorf("decoding instances: %w", err))
		}
		for _, r := range page.Instances {
			if r.Label != nil && providers.IsOperatorMachine(*r.Label) {
				out = append(out, NormalizeInstance(r))
			}
		}
		if page.NextToken == nil || *page.NextToken == "" || len(page.Instances) == 0 {
			return out, nil
		}
		if seen[*page.NextToken] {
			return nil, a.calls.Wrap(op, errors.New("the instance list repeated a page token"))
		}
		seen[*page.NextToken] = true
		after = page.NextToken
	}
	return nil, a.calls.Wrap(op, fmt.Errorf("the instance list did not end after %d pages", maxPages))
}

// InstanceJSON is the part of a v1 instance row (showInstances) the
// adapter reads.
type InstanceJSON struct {
	ID             json.Number     `json:"id"`
	ActualStatus   *string         `json:"actual_status"`
	IntendedStatus *string         `json:"intended_status"`
	CurState       *string         `json:"cur_state"`
	Label          *string         `json:"label"`
	StatusMsg      *string         `json:"status_msg"`
	PublicIPAddr   *string         `json:"public_ipaddr"`
	SSHHost        *string         `json:"ssh_host"`
	SSHPort        *int            `json:"ssh_port"`
	Ports          json.RawMessage `json:"ports"`
	ImageRuntype   *string         `json:"image_runtype"`
	IsBid          *bool           `json:"is_bid"`
	MinBid         *float64        `json:"min_bid"`
	DPHBase        *float64        `json:"dph_base"`
	Geolocation    *string         `json:"geolocation"`
}

// NormalizeInstance maps a v1 instance row onto providers.Instance.
//
// States (actual_status; the spec lists no enum: its examples and quirks
// name running, exited, unknown and offline, and its instances start with
// actual_status null):
//   - null or "": pending (scheduled, nothing started yet);
//   - running: running;
//   - stopped: interrupted. For an interruptible instance (is_bid) that is
//     meant to run (intended_status running) it is an outbid: a higher bid
//     won the machine (rental-types.mdx: "Your instance is stopped"), and
//     Outbid is set, NativeState says so, and MinBid is what would win it
//     back. That the outbid shows as actual_status stopped with
//     intended_status running is an ASSUMPTION (the spec describes no field
//     for it); the operator never stops an instance itself, so any stopped
//     instance is an interruption;
//   - exited, offline: interrupted (the container ended, the host went
//     away); the spec's quirk: they "will never reach running";
//   - unknown: failed (the same quirk);
//   - anything else (created, loading, ...): booting.
//
// Spot is is_bid; BidPrice, for a bid, is dph_base, the machine's price per
// hour without storage, which for an interruptible instance is its bid (an
// ASSUMPTION: the spec has no field named for the bid). ProviderRegion is
// the geolocation. InstanceType is left empty: the list names the machine
// (machine_id), not the ask the instance was created from. PublicIP is
// public_ipaddr; Ports are the "ports" mappings ("8080/tcp": [{"HostIp",
// "HostPort"}], "only present on running instances"); SSH, while running,
// is public_ipaddr and the host port of 22/tcp (ssh_direct), else, for an
// SSH runtype (image_runtype), ssh_host and ssh_port (Vast.ai's proxy), as
// root; a container launched with runtype args has no SSH.
func NormalizeInstance(r InstanceJSON) providers.Instance {
	in := providers.Instance{
		Provider:       providers.VastAI,
		ID:             r.ID.String(),
		Name:           deref(r.Label),
		ProviderRegion: strings.TrimSpace(deref(r.Geolocation)),
		Spot:           deref(r.IsBid),
		PublicIP:       strings.TrimSpace(deref(r.PublicIPAddr)),
		MinBid:         deref(r.MinBid),
	}
	if in.Spot {
		in.BidPrice = deref(r.DPHBase)
	}
	actual := strings.ToLower(strings.TrimSpace(deref(r.ActualStatus)))
	intended := strings.ToLower(strings.TrimSpace(deref(r.IntendedStatus)))
	in.NativeState = actual
	switch actual {
	case "":
		in.State, in.NativeState = providers.StatePending, "scheduling (actual_status null)"
	case "running":
		in.State = providers.StateRunning
	case "stopped":
		in.State = providers.StateInterrupted
		if in.Spot && intended == "running" {
			in.Outbid = true
			in.NativeState = fmt.Sprintf("outbid: stopped by a higher bid (actual_status stopped, intended_status running; bid $%.3f/h, min_bid $%.3f/h)", in.BidPrice, in.MinBid)
		} else if intended != "" {
			in.NativeState = "stopped (intended_status " + intended + ")"
		}
	case "exited", "offline":
		in.State = providers.StateInterrupted
	case "unknown":
		in.State = providers.StateFailed
	default:
		in.State = providers.StateBooting
	}
	if msg := strings.TrimSpace(deref(r.StatusMsg)); msg != "" && !in.Outbid {
		in.NativeState += ": " + providers.TruncateMessage(msg, 200)
	}
	var ports map[string][]struct {
		HostIP   string `json:"HostIp"`
		HostPort string `json:"HostPort"`
	}
	if len(r.Ports) > 0 && json.Unmarshal(r.Ports, &ports) == nil {
		for spec, maps := range ports {
			portStr, proto, _ := strings.Cut(spec, "/")
			port, err := strconv.Atoi(portStr)
			if err != nil || port < 1 || len(maps) == 0 {
				continue
			}
			public, err := strconv.Atoi(maps[0].HostPort)
			if err != nil || public < 1 {
				continue
			}
			if proto == "" {
				proto = "tcp"
			}
			in.Ports = append(in.Ports, providers.PortMapping{Port: port, Protocol: proto, PublicIP: in.PublicIP, PublicPort: public})
		}
		sortPorts(in.Ports)
	}
	if in.State == providers.StateRunning {
		for _, p := range in.Ports {
			if p.Port == 22 && p.Protocol == "tcp" && in.PublicIP != "" {
				in.SSH = &providers.SSHEndpoint{Host: in.PublicIP, Port: p.PublicPort, User: SSHUser}
			}
		}
		sshRuntype := strings.Contains(deref(r.ImageRuntype), "ssh")
		if in.SSH == nil && sshRuntype && deref(r.SSHHost) != "" && deref(r.SSHPort) > 0 {
			in.SSH = &providers.SSHEndpoint{Host: strings.TrimSpace(*r.SSHHost), Port: *r.SSHPort, User: SSHUser}
		}
	}
	return in
}

func sortPorts(ps []providers.PortMapping) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && (ps[j].Port < ps[j-1].Port || ps[j].Port == ps[j-1].Port && ps[j].Protocol < ps[j-1].Protocol); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// Terminate destroys an instance with DELETE /api/v0/instances/{id}/
// (destroyInstance: "Destroys/deletes an instance permanently"). An
// instance that is already gone (404 not_found) is success. An id that is
// not a Vast.ai instance id (an integer) is ClassInvalid and sends nothing.
func (a *Adapter) Terminate(ctx context.Context, id string) error {
	const op = "Terminate"
	n, err := strconv.Atoi(id)
	if err != nil || n <= 0 {
		return &providers.Error{Provider: providers.VastAI, Operation: op, Class: providers.ClassInvalid, Message: fmt.Sprintf("%q is not a Vast.ai instance id", id)}
	}
	_, err = a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.DestroyInstance(ctx, n)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// RaiseBid changes an interruptible instance's bid with PUT
// /api/v0/instances/bid_price/{id}/ (changeBid, {"client_id": "me",
// "price": price}). price is rounded down to BidStep and must be within
// what changeBid accepts ($0.001 to $32/h); a missing instance is
// ClassNotFound (404 no_such_instance).
func (a *Adapter) RaiseBid(ctx context.Context, id string, price float64) error {
	const op = "RaiseBid"
	n, err := strconv.Atoi(id)
	if err != nil || n <= 0 {
		return &providers.Error{Provider: providers.VastAI, Operation: op, Class: providers.ClassInvalid, Message: fmt.Sprintf("%q is not a Vast.ai instance id", id)}
	}
	bid := roundDown(price)
	if !(bid >= BidStep) || bid > MaxChangeBid {
		return &providers.Error{Provider: providers.VastAI, Operation: op, Class: providers.ClassInvalid,
			Message: fmt.Sprintf("a bid must be between $%.3f and $%.0f/h, got %v", BidStep, MaxChangeBid, price)}
	}
	_, err = a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.ChangeBid(ctx, n, vastaiapi.ChangeBidJSONRequestBody{ClientId: "me", Price: bid})
	})
	return err
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
