package controller

import (
	"context"
	"fmt"
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

// bootstrapTemplate reads the request's user-data template: the Secret key
// spec.bootstrap names, or the default. The Secret must carry the consent
// label and may not live in the operator's own namespace. Errors name the
// Secret and key, never their content.
func (c *Controller) bootstrapTemplate(ctx context.Context, req *tgpv1.GPURequest) (string, error) {
	b := req.Spec.Bootstrap
	if b == nil {
		return bootstrap.DefaultTemplate, nil
	}
	ref := req.Namespace + "/" + b.SecretName
	if req.Namespace == c.cfg.OperatorNamespace {
		return "", fmt.Errorf("bootstrap Secret %s: the operator's own namespace is never a bootstrap source", ref)
	}
	secret, err := c.kube.CoreV1().Secrets(req.Namespace).Get(ctx, b.SecretName, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("bootstrap Secret %s not found", ref)
		}
		if apierrors.IsForbidden(err) {
			return "", fmt.Errorf("bootstrap Secret %s cannot be read by the operator", ref)
		}
		return "", fmt.Errorf("reading bootstrap Secret %s: %s", ref, apierrors.ReasonForError(err))
	}
	if secret.Labels[LabelBootstrapConsent] != "true" {
		return "", fmt.Errorf("bootstrap Secret %s lacks the label %s: \"true\" that allows its use as a bootstrap template", ref, LabelBootstrapConsent)
	}
	key := b.Key
	if key == "" {
		key = "userdata"
	}
	data, ok := secret.Data[key]
	if !ok {
		return "", fmt.Errorf("bootstrap Secret %s has no key %q", ref, key)
	}
	return string(data), nil
}

// render renders a template for one machine, bounded in time, work and
// output (the provider's user-data limit).
func (c *Controller) render(req *tgpv1.GPURequest, template, name string, offer providers.Offer) (string, error) {
	labels := nodeLabels(req, offer.Provider, offer.Region, offer.Capacity == providers.Spot)
	return bootstrap.Render(template, bootstrap.Data{
		NodeName:         name,
		RequestName:      req.Name,
		RequestNamespace: req.Namespace,
		Provider:         offer.Provider,
		Region:           offer.Region,
		Labels:           labels,
		Taints:           req.Spec.NodeTaints,
		KubeletLabels:    bootstrap.KubeletLabels(labels),
		KubeletTaints:    bootstrap.KubeletTaints(req.Spec.NodeTaints),
	}, bootstrap.Limits{MaxBytes: providers.UserDataLimit(offer.Provider)})
}

// bootstrapError reports a bootstrap that cannot be read or rendered: no
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
