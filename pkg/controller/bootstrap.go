package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/bootstrap"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Bootstrap: the user-data template (a consent-labelled Secret or the
// default) rendered per machine within the provider's limits.

// LabelBootstrapConsent marks a Secret whose keys may be used as a bootstrap
// template. It is set by someone allowed to write Secrets in that namespace,
// so a tenant who may only create GPURequests cannot make the operator read
// (and send to a provider) a Secret they could not read themselves.
const LabelBootstrapConsent = "tgp.solanyn.com/bootstrap"

// bootstrapSet is a request's bootstrap templates by format.
type bootstrapSet map[providers.BootstrapFormat]string

// pick is the template to send a provider's VMs: the first of the formats
// it runs that the set has.
func (b bootstrapSet) pick(p providers.Provider) (string, bool) {
	for _, f := range providers.BootstrapFormats(p) {
		if t, ok := b[f]; ok {
			return t, true
		}
	}
	return "", false
}

// noBootstrap lists the configured providers the set has no template for;
// their offers lose with reason NoBootstrapForProvider.
func (c *Controller) noBootstrap(b bootstrapSet) []string {
	var out []string
	for name, p := range c.providers {
		if _, ok := b.pick(p); !ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// bootstrapTemplates reads the request's user-data templates: the Secret
// keys spec.bootstrap names (key in any format, scriptKey a script), or the
// default, and the values its templates read as .Values (valuesFrom's
// Secret, nil without one). Errors name the Secret and key, never their
// content.
func (c *Controller) bootstrapTemplates(ctx context.Context, req *tgpv1.GPURequest) (bootstrapSet, map[string]string, error) {
	b := req.Spec.Bootstrap
	if b == nil {
		return defaultBootstrap(), nil, nil
	}
	set, err := c.templatesFrom(ctx, req, b)
	if err != nil || b.ValuesFrom == nil {
		return set, nil, err
	}
	secret, err := c.consentedSecret(ctx, req.Namespace, b.ValuesFrom.SecretName, "bootstrap values")
	if err != nil {
		return nil, nil, err
	}
	values := make(map[string]string, len(secret.Data))
	for k, v := range secret.Data {
		values[k] = string(v)
	}
	return set, values, nil
}

// templatesFrom reads the templates spec.bootstrap names.
func (c *Controller) templatesFrom(ctx context.Context, req *tgpv1.GPURequest, b *tgpv1.BootstrapSource) (bootstrapSet, error) {
	secret, err := c.consentedSecret(ctx, req.Namespace, b.SecretName, "bootstrap")
	if err != nil {
		return nil, err
	}
	ref := req.Namespace + "/" + b.SecretName
	key := b.Key
	if key == "" {
		key = "userdata"
	}
	data, ok := secret.Data[key]
	if !ok {
		return nil, fmt.Errorf("bootstrap Secret %s has no key %q", ref, key)
	}
	set := bootstrapSet{providers.FormatOf(string(data)): string(data)}
	if b.ScriptKey != "" {
		script, ok := secret.Data[b.ScriptKey]
		if !ok {
			return nil, fmt.Errorf("bootstrap Secret %s has no key %q", ref, b.ScriptKey)
		}
		if providers.FormatOf(string(script)) != providers.FormatScript {
			return nil, fmt.Errorf("bootstrap Secret %s key %q is not a script (its first line must start with #!)", ref, b.ScriptKey)
		}
		set[providers.FormatScript] = string(script)
	}
	return set, nil
}

// defaultBootstrap is the set of a request without spec.bootstrap.
func defaultBootstrap() bootstrapSet {
	return bootstrapSet{providers.FormatOf(bootstrap.DefaultTemplate): bootstrap.DefaultTemplate}
}

// consentedSecret reads a Secret the operator may use for a request's
// machine: in the request's namespace, never the operator's own, and
// carrying the consent label. use says what for, in errors.
func (c *Controller) consentedSecret(ctx context.Context, namespace, name, use string) (*corev1.Secret, error) {
	ref := namespace + "/" + name
	if namespace == c.cfg.OperatorNamespace {
		return nil, fmt.Errorf("%s Secret %s: the operator's own namespace is never a source", use, ref)
	}
	secret, err := c.kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s Secret %s not found", use, ref)
		}
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("%s Secret %s cannot be read by the operator", use, ref)
		}
		return nil, fmt.Errorf("reading %s Secret %s: %s", use, ref, apierrors.ReasonForError(err))
	}
	if secret.Labels[LabelBootstrapConsent] != "true" {
		return nil, fmt.Errorf("%s Secret %s lacks the label %s: \"true\" that allows the operator to use it", use, ref, LabelBootstrapConsent)
	}
	return secret, nil
}

// containerSpec resolves spec.container for a launch: env values from
// consent-labelled Secrets are read here and go only to the provider.
func (c *Controller) containerSpec(ctx context.Context, req *tgpv1.GPURequest) (*providers.ContainerSpec, error) {
	spec := req.Spec.Container
	out := &providers.ContainerSpec{Image: spec.Image, Args: spec.Args, Env: make(map[string]string, len(spec.Env))}
	secrets := map[string]*corev1.Secret{}
	for _, e := range spec.Env {
		if e.Value != nil {
			out.Env[e.Name] = *e.Value
			continue
		}
		if e.ValueFrom == nil {
			continue // validation refuses it
		}
		ref := e.ValueFrom
		secret, ok := secrets[ref.SecretName]
		if !ok {
			var err error
			if secret, err = c.consentedSecret(ctx, req.Namespace, ref.SecretName, "container env"); err != nil {
				return nil, err
			}
			secrets[ref.SecretName] = secret
		}
		v, ok := secret.Data[ref.Key]
		if !ok {
			return nil, fmt.Errorf("container env %s: Secret %s/%s has no key %q", e.Name, req.Namespace, ref.SecretName, ref.Key)
		}
		out.Env[e.Name] = string(v)
	}
	for _, p := range spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		out.Ports = append(out.Ports, providers.Port{Port: int(p.Port), Protocol: proto})
	}
	return out, nil
}

// render renders a template for one machine, bounded in time, work and
// output (the provider's user-data limit); values are its .Values. With
// --mint-join-tokens the machine's token Secret is created only for user
// data that passed every check, and a machine that has one already (a
// repeated render, a restarted operator) renders with that one.
func (c *Controller) render(ctx context.Context, req *tgpv1.GPURequest, template string, values map[string]string, name string, offer providers.Offer) (string, error) {
	if req.Spec.Container != nil {
		return "", nil
	}
	labels := nodeLabels(req, offer.Provider, offer.Region, offer.Capacity == providers.Spot)
	data := bootstrap.Data{
		NodeName:         name,
		RequestName:      req.Name,
		RequestNamespace: req.Namespace,
		Provider:         offer.Provider,
		Region:           offer.Region,
		Labels:           labels,
		Taints:           req.Spec.NodeTaints,
		KubeletLabels:    bootstrap.KubeletLabels(labels),
		KubeletTaints:    bootstrap.KubeletTaints(req.Spec.NodeTaints),
		Values:           values,
	}
	limits := bootstrap.Limits{MaxBytes: providers.UserDataLimit(offer.Provider)}
	if !c.cfg.MintJoinTokens {
		return renderChecked(template, data, limits)
	}
	join, mint, err := c.joinToken(ctx, req, name)
	if err != nil {
		return "", err
	}
	userData, err := renderChecked(template, join.into(data), limits)
	if err != nil {
		return "", err
	}
	// The CA's hash in the user data means kubeadm's token discovery.
	switch err := mint(ctx, strings.Contains(userData, join.CACertHash)); {
	case errors.Is(err, errTokenExists):
		if join, err = c.existingJoinToken(ctx, name); err != nil {
			return "", err
		}
		return renderChecked(template, join.into(data), limits)
	case err != nil:
		return "", err
	}
	return userData, nil
}

// renderChecked renders and refuses user data whose kubelet flags carry
// labels a kubelet may not set: that machine would never join, so it is
// refused before it is paid for.
func renderChecked(template string, data bootstrap.Data, limits bootstrap.Limits) (string, error) {
	userData, err := bootstrap.Render(template, data, limits)
	if err == nil {
		err = bootstrap.RefusedKubeletLabels(userData)
	}
	if err != nil {
		return "", err
	}
	return userData, nil
}

// bootstrapError reports a bootstrap (or container env) that cannot be read or rendered: no
// launch, Launched=False with reason BootstrapError, one Warning Event per
// distinct message, and a retry after bootstrapRetry (a fixed Secret is
// picked up then). Nothing in the message comes from the template.
func (c *Controller) bootstrapError(s *syncCtx, err error) (time.Duration, error) {
	req := s.req
	st := &req.Status
	msg := "cannot use the bootstrap: " + err.Error()
	if st.Phase != tgpv1.PhasePending || st.Message != msg || st.ObservedGeneration != req.Generation {
		st.Phase, st.Message = tgpv1.PhasePending, msg
		c.setCondition(req, tgpv1.ConditionLaunched, metav1.ConditionFalse, "BootstrapError", msg)
		c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, "BootstrapError", msg)
		c.event(req, corev1.EventTypeWarning, "BootstrapError", "%s", msg)
		klog.FromContext(s.ctx).Info("bootstrap refused", "err", err)
	}
	return bootstrapRetry, nil
}

// bootstrapRetry is how often a request with an unusable bootstrap looks
// at its Secret again.
const bootstrapRetry = time.Minute
