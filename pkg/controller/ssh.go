package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/sshboot"
)

// Bootstrap delivery over SSH, for VMs whose create call cannot carry their
// bootstrap (providers.DeliverOverSSH: Vast.ai). Once the provider lists the
// machine running with an SSH endpoint, the operator renders the same
// bootstrap the other providers get as user data and runs it there
// (sshboot.Run) with its own key pair, exactly once per machine, in a
// goroutine of its own: a worker never waits on SSH. The sync that starts a
// delivery returns at once; the goroutine records the outcome in memory and
// in the operator's namespace, and enqueues the request again.
//
// Where things are kept, and why (status is input a tenant can write, so
// nothing in it is proof of anything here):
//
//   - The key pair: Secret SSHKeySecret in Config.OperatorNamespace (type
//     kubernetes.io/ssh-auth, key ssh-privatekey), made on first use with
//     sshboot.NewKey, read otherwise; its public half (SSHKeys.PublicKey) is
//     what the Vast.ai adapter registers with the account.
//   - Each machine's delivery record: Secret SSHHostsSecret in the same
//     namespace, one key per machine name, holding the host key pinned on
//     first use and the delivery's state. It is written before a Run
//     ("starting") and after it, so after a restart a machine whose script
//     may have started is never bootstrapped twice (it waits for its Node
//     until the join timeout), and a retry or later connection checks the
//     pinned host key. Records of machines no request claims any more are
//     pruned at each write.
//   - In memory, the same records plus whether a Run is in flight, so a
//     delivery is never started twice by this process.
//
// A Run that fails before the script started is retried, up to
// Config.BootstrapDeliveries Runs (each of them sshboot's own bounded
// connection attempts); a script that started and exited non-zero is never
// run again. Either way the machine then counts as failed to join (the
// join-timeout path: terminated, the request Failed). Nothing of the
// script, its output or the key is logged, put in an Event or in status.

// Names of the operator's SSH Secrets in its namespace.
const (
	SSHKeySecret   = "gpu-operator-ssh"
	SSHHostsSecret = "gpu-operator-ssh-hosts"
	sshKeyComment  = "gpu-operator"
)

// SSHKeys is the operator's SSH key pair, shared by the controller (which
// makes or reads it and delivers with it) and the adapters that register
// its public half (the Vast.ai adapter's Config.SSHPublicKey is
// SSHKeys.PublicKey). It is safe for concurrent use.
type SSHKeys struct {
	kube      KubeClient
	namespace string

	mu     sync.Mutex
	signer ssh.Signer
	public string
}

// NewSSHKeys returns the key pair kept in Secret SSHKeySecret of namespace
// (the operator's). Nothing is read until Ensure.
func NewSSHKeys(kube KubeClient, namespace string) *SSHKeys {
	return &SSHKeys{kube: kube, namespace: namespace}
}

// PublicKey is the public key as an authorized_keys line, empty until
// Ensure has read or made the pair. The controller calls Ensure before
// every launch of a VM on a DeliverOverSSH provider, so an adapter reading
// it at launch always finds it.
func (k *SSHKeys) PublicKey() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.public
}

// Ensure reads the key pair from its Secret, creating the Secret with a new
// key when it does not exist; once read, the pair is kept for the process's
// life.
func (k *SSHKeys) Ensure(ctx context.Context) (ssh.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.signer != nil {
		return k.signer, nil
	}
	secrets := k.kube.CoreV1().Secrets(k.namespace)
	secret, err := secrets.Get(ctx, SSHKeySecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		pem, _, kerr := sshboot.NewKey(sshKeyComment)
		if kerr != nil {
			return nil, fmt.Errorf("making the operator's SSH key: %w", kerr)
		}
		secret, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: SSHKeySecret, Namespace: k.namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": FieldManager}},
			Type: corev1.SecretTypeSSHAuth,
			Data: map[string][]byte{corev1.SSHAuthPrivateKey: pem},
		}, metav1.CreateOptions{FieldManager: FieldManager})
		if apierrors.IsAlreadyExists(err) { // another replica made it first
			secret, err = secrets.Get(ctx, SSHKeySecret, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the operator's SSH key Secret %s/%s: %s", k.namespace, SSHKeySecret, apierrors.ReasonForError(err))
	}
	signer, public, err := sshboot.LoadKey(secret.Data[corev1.SSHAuthPrivateKey], sshKeyComment)
	if err != nil {
		// The error names no key material (sshboot's parse error).
		return nil, fmt.Errorf("the operator's SSH key Secret %s/%s key %s: %v", k.namespace, SSHKeySecret, corev1.SSHAuthPrivateKey, err)
	}
	k.signer, k.public = signer, public
	return signer, nil
}

// deliveryState is where a machine's bootstrap delivery is.
type deliveryState string

const (
	// deliveryStarting is recorded before a Run: found after a restart, the
	// script may have started, and it is never run again.
	deliveryStarting deliveryState = "starting"
	// deliveryDone: the script ran and exited 0.
	deliveryDone deliveryState = "delivered"
	// deliveryNotStarted: the last Run failed before the script started
	// (the SSH server was not up, a refused handshake, a changed host key).
	deliveryNotStarted deliveryState = "not-started"
	// deliveryScriptFailed: the script ran and exited non-zero.
	deliveryScriptFailed deliveryState = "script-failed"
	// deliveryInterrupted: the connection ended while the script ran.
	deliveryInterrupted deliveryState = "interrupted"
)

// deliveryRecord is one machine's delivery, as kept in SSHHostsSecret.
type deliveryRecord struct {
	// HostKey is the machine's host key, pinned on first use.
	HostKey string        `json:"hostKey,omitempty"`
	State   deliveryState `json:"state"`
	// Runs is how many sshboot.Run calls were made.
	Runs int `json:"runs"`

	// running is a Run in flight in this process (memory only).
	running bool
	// lastError is the last failure, for messages (memory only; sshboot's
	// errors name addresses, fingerprints and exit statuses, never the
	// script or its output).
	lastError string
}

// deliveries are the records of every machine's delivery.
type deliveries struct {
	mu      sync.Mutex
	loaded  bool
	records map[string]*deliveryRecord
	// writeMu serialises the writes of SSHHostsSecret by this process.
	writeMu sync.Mutex
	// wg counts the delivery goroutines, which Run waits for.
	wg sync.WaitGroup
}

func newDeliveries() *deliveries { return &deliveries{records: map[string]*deliveryRecord{}} }

// load reads SSHHostsSecret once per process.
func (c *Controller) loadDeliveries(ctx context.Context) error {
	d := c.deliveries
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.loaded {
		return nil
	}
	secret, err := c.kube.CoreV1().Secrets(c.cfg.OperatorNamespace).Get(ctx, SSHHostsSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading Secret %s/%s: %s", c.cfg.OperatorNamespace, SSHHostsSecret, apierrors.ReasonForError(err))
	default:
		for name, raw := range secret.Data {
			var r deliveryRecord
			if json.Unmarshal(raw, &r) == nil {
				if _, ok := d.records[name]; !ok {
					d.records[name] = &r
				}
			}
		}
	}
	d.loaded = true
	return nil
}

// record returns a copy of machine's record (zero when there is none).
func (d *deliveries) record(machine string) deliveryRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.records[machine]; ok {
		return *r
	}
	return deliveryRecord{}
}

func (d *deliveries) set(machine string, r deliveryRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[machine] = &r
}

// persistDelivery writes machine's record into SSHHostsSecret (creating it),
// dropping the records of machines no request claims any more.
func (c *Controller) persistDelivery(ctx context.Context, machine string, r deliveryRecord) error {
	d := c.deliveries
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	secrets := c.kube.CoreV1().Secrets(c.cfg.OperatorNamespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		secret, err := secrets.Get(ctx, SSHHostsSecret, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = secrets.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: SSHHostsSecret, Namespace: c.cfg.OperatorNamespace,
					Labels: map[string]string{"app.kubernetes.io/managed-by": FieldManager}},
				Data: map[string][]byte{machine: raw},
			}, metav1.CreateOptions{FieldManager: FieldManager})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("secrets"), SSHHostsSecret, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if secret.Data == nil {
			secret.Data = map[string][]byte{}
		}
		for name := range secret.Data {
			if name != machine && !c.machineClaimed(name) {
				delete(secret.Data, name)
				d.mu.Lock()
				if rec, ok := d.records[name]; ok && !rec.running {
					delete(d.records, name)
				}
				d.mu.Unlock()
			}
		}
		secret.Data[machine] = raw
		_, err = secrets.Update(ctx, secret, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}

// machineClaimed reports whether a request in the cache claims machine.
func (c *Controller) machineClaimed(machine string) bool {
	objs, err := c.requestIdx.ByIndex(byMachineName, machine)
	return err != nil || len(objs) > 0
}

// deliverBootstrap is the join stage's SSH step for a machine the provider
// lists running: it starts the delivery, or reports the one in flight, or
// lets the stage go on to wait for the Node (proceed) once the script has
// run (or may have: a delivery interrupted by a restart). A delivery that
// failed for good ends the machine through joinFailed.
func (c *Controller) deliverBootstrap(s *syncCtx, inst providers.Instance, deadline time.Time) (delay time.Duration, proceed bool, err error) {
	ctx, req := s.ctx, s.req
	st := &req.Status
	machine := st.MachineName
	wait := clampDelay(min(c.cfg.PollInterval, deadline.Sub(c.clock.Now())))
	if err := c.loadDeliveries(ctx); err != nil {
		return 0, false, err
	}
	rec := c.deliveries.record(machine)
	switch {
	case rec.running:
		return wait, false, nil
	case rec.State == deliveryDone:
		msg := "bootstrap delivered over SSH; waiting for Node " + machine
		c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "BootstrapDelivered", msg)
		st.Message = msg
		return 0, true, nil
	case rec.State == deliveryStarting || rec.State == deliveryInterrupted:
		// The script may have run: never again. Wait for the Node until
		// the join timeout.
		msg := "the bootstrap delivery over SSH may have run in part (its connection or the operator stopped); waiting for Node " + machine
		c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "BootstrapOutcomeUnknown", msg)
		st.Message = msg
		return 0, true, nil
	case rec.State == deliveryScriptFailed:
		return c.joinFailedDelay(s, &inst, "BootstrapFailed", fmt.Sprintf("the bootstrap of %s ran over SSH and failed (%s); instance %s terminated", machine, rec.lastErrorOr("a non-zero exit status"), st.InstanceID))
	case rec.Runs >= c.cfg.BootstrapDeliveries:
		return c.joinFailedDelay(s, &inst, "BootstrapUndelivered", fmt.Sprintf("the bootstrap of %s could not be delivered over SSH in %d attempts (%s); instance %s terminated", machine, rec.Runs, rec.lastErrorOr("no connection"), st.InstanceID))
	case inst.SSH == nil:
		st.Message = fmt.Sprintf("instance %s is running; waiting for %s to report its SSH endpoint", inst.ID, st.Provider)
		return wait, false, nil
	}
	script, err := c.bootstrapScript(s)
	if err != nil {
		return c.joinFailedDelay(s, &inst, "BootstrapError", fmt.Sprintf("cannot render the bootstrap of %s: %v; instance %s terminated", machine, err, st.InstanceID))
	}
	signer, err := c.sshKeys.Ensure(ctx)
	if err != nil {
		return 0, false, err
	}
	rec.running, rec.State = true, deliveryStarting
	rec.Runs++
	c.deliveries.set(machine, rec)
	msg := fmt.Sprintf("delivering the bootstrap over SSH to %s:%d (attempt %d of %d)", inst.SSH.Host, inst.SSH.Port, rec.Runs, c.cfg.BootstrapDeliveries)
	st.Message = msg
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "DeliveringBootstrap", msg)
	klog.FromContext(ctx).Info("delivering the bootstrap over SSH", "machine", machine, "instance", inst.ID, "attempt", rec.Runs)
	c.deliveries.wg.Add(1)
	go c.runDelivery(ctx, req.DeepCopy(), machine, *inst.SSH, signer, script, rec)
	return wait, false, nil
}

func (r deliveryRecord) lastErrorOr(def string) string {
	if r.lastError != "" {
		return r.lastError
	}
	return def
}

// joinFailedDelay adapts joinFailed to deliverBootstrap's results.
func (c *Controller) joinFailedDelay(s *syncCtx, inst *providers.Instance, reason, msg string) (time.Duration, bool, error) {
	d, err := c.joinFailed(s, inst, reason, msg)
	return d, false, err
}

// bootstrapScript renders the machine's bootstrap as the launch did (the
// request's template for the provider, or the default).
func (c *Controller) bootstrapScript(s *syncCtx) (string, error) {
	req := s.req
	st := &req.Status
	templates, values, err := c.bootstrapTemplates(s.ctx, req)
	if err != nil {
		return "", err
	}
	template, ok := templates.pick(c.providers[st.Provider])
	if !ok {
		return "", fmt.Errorf("no bootstrap template in a format %s runs", st.Provider)
	}
	return c.render(s.ctx, req, template, values, st.MachineName, providers.Offer{Provider: st.Provider, Region: st.Region, Capacity: capacity(st.Spot)})
}

// runDelivery is one delivery's goroutine: record "starting", Run, record
// the outcome, tell the request. ctx ends with the controller.
func (c *Controller) runDelivery(ctx context.Context, req *tgpv1.GPURequest, machine string, target providers.SSHEndpoint, signer ssh.Signer, script string, rec deliveryRecord) {
	defer c.deliveries.wg.Done()
	logger := klog.FromContext(ctx)
	// The records outlive a cancelled context: a shutdown still says what
	// happened.
	persist := func(r deliveryRecord) error {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return c.persistDelivery(pctx, machine, r)
	}
	result := "success"
	finish := func() {
		rec.running = false
		c.deliveries.set(machine, rec)
		c.metrics.SSHBootstraps.WithLabelValues(req.Status.Provider, result).Inc()
		c.queue.Add(cache.MetaObjectToName(req))
	}
	defer finish()
	if err := persist(rec); err != nil {
		// Without the record a restart could run the script twice: not now.
		rec.State, rec.lastError, result = deliveryNotStarted, "recording the delivery failed: "+string(apierrors.ReasonForError(err)), "not_started"
		logger.Error(err, "recording a bootstrap delivery before it starts; not delivering now", "machine", machine)
		c.event(req, corev1.EventTypeWarning, "BootstrapDeliveryFailed", "bootstrap of %s over SSH not attempted: the delivery could not be recorded first", machine)
		return
	}
	res, err := sshboot.Run(ctx, target, signer, script, sshboot.Options{
		HostKey: rec.HostKey, Timeout: c.cfg.SSHTimeout, Attempts: c.cfg.SSHAttempts, Backoff: c.cfg.SSHBackoff})
	if rec.HostKey == "" {
		rec.HostKey = res.HostKey // pinned on first use
	}
	var exit *sshboot.ExitError
	switch {
	case err == nil:
		rec.State, rec.lastError = deliveryDone, ""
	case res.Started && errors.As(err, &exit):
		rec.State, rec.lastError, result = deliveryScriptFailed, err.Error(), "script_failed"
	case res.Started:
		rec.State, rec.lastError, result = deliveryInterrupted, err.Error(), "interrupted"
	default:
		rec.State, rec.lastError, result = deliveryNotStarted, err.Error(), "not_started"
	}
	if perr := persist(rec); perr != nil {
		logger.Error(perr, "recording a bootstrap delivery's outcome", "machine", machine, "state", rec.State)
	}
	if err != nil {
		logger.Info("bootstrap delivery over SSH failed", "machine", machine, "started", res.Started, "connections", res.Attempts, "err", err)
		c.event(req, corev1.EventTypeWarning, "BootstrapDeliveryFailed", "bootstrap of %s over SSH (run %d of %d): %v", machine, rec.Runs, c.cfg.BootstrapDeliveries, err)
		return
	}
	logger.Info("bootstrap delivered over SSH", "machine", machine, "connections", res.Attempts)
	c.event(req, corev1.EventTypeNormal, "BootstrapDelivered", "bootstrap of %s delivered over SSH to %s:%d", machine, target.Host, target.Port)
}
