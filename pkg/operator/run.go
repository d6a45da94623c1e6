package operator

import (
	"context"
	"errors"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/solanyn/gpu-operator/pkg/controller"
)

// LeaderElection configures Run to work only while holding a Lease.
type LeaderElection struct {
	// Name and Namespace are the Lease's.
	Name, Namespace string
	Leases          coordinationv1.LeasesGetter
	// Identity is this replica's holder identity; empty is the host name
	// followed by "_" and a random UID.
	Identity                                  string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// ErrLeadershipLost is Run's error when the Lease was lost while its context
// was still live: the process should exit, so that a restart rejoins the
// election with clean state.
var ErrLeadershipLost = errors.New("lost the leader Lease")

// Run starts inf, waits for the controller's caches and runs the controller
// with workers until ctx ends; then it stops the informers and waits for
// them. With le not nil the controller runs only while this replica holds
// the Lease (the caches are already warm while it stands by), and the Lease
// is released when ctx ends. It returns an error when ctx ended before the
// caches synced or le is invalid, and ErrLeadershipLost; an error of the
// controller itself is logged. Logs go to ctx's logger.
func Run(ctx context.Context, ctrl *controller.Controller, inf Informers, workers int, le *LeaderElection) error {
	logger := klog.FromContext(ctx)
	// The informers stop when Run returns, also when the Lease was lost
	// while ctx lives on: Shutdown waits for them.
	infCtx, stopInformers := context.WithCancel(ctx)
	inf.Start(infCtx)
	defer inf.Shutdown()
	defer stopInformers()
	if err := ctrl.WaitForCaches(ctx); err != nil {
		return err
	}
	run := func(ctx context.Context) {
		if err := ctrl.Run(ctx, workers); err != nil {
			logger.Error(err, "controller stopped")
		}
	}
	if le == nil {
		run(ctx)
		return nil
	}
	id := le.Identity
	if id == "" {
		host, _ := os.Hostname()
		id = host + "_" + string(uuid.NewUUID())
	}
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: le.Name, Namespace: le.Namespace},
			Client:     le.Leases,
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		Name:            le.Name,
		ReleaseOnCancel: true,
		LeaseDuration:   le.LeaseDuration,
		RenewDeadline:   le.RenewDeadline,
		RetryPeriod:     le.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				logger.Info("became leader", "identity", id)
				run(ctx)
			},
			OnStoppedLeading: func() {
				logger.Info("stopped leading", "identity", id)
			},
		},
	})
	if err != nil {
		return err
	}
	elector.Run(ctx)
	if ctx.Err() == nil {
		return ErrLeadershipLost
	}
	return nil
}
