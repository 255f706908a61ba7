// Package clusterroleaggregation is the ClusterRole aggregation controller.
// A ClusterRole with an aggregationRule (admin, edit and view among the
// defaults) has no rules of its own: its rules are the union of the rules of
// every ClusterRole that one of its clusterRoleSelectors matches. The
// controller keeps them so, in a stable order (selectors in order, matching
// roles by name, rules as they appear, duplicates dropped), whenever a
// ClusterRole appears, changes or goes away. It writes a role only when its
// rules differ from the union.
//
// It runs in the controller manager and reaches the apiserver only through
// client-go. The identity it runs under needs the escalate verb on
// clusterroles, because it writes rules it need not hold itself.
package clusterroleaggregation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"tether/controllers/internal/queue"
	"tether/internal/informer"
)

// DefaultResyncPeriod is used when Config.ResyncPeriod is zero and the
// controller builds its own informers.
const DefaultResyncPeriod = 10 * time.Minute

// Back-off bounds for a role whose update failed.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Minute
)

// aggregatedIndex indexes the ClusterRoles that have an aggregationRule
// under "true", so that a change finds them without a scan.
const aggregatedIndex = "tether.clusterroleaggregation/aggregated"

// Config configures a Controller. A Config is not changed after it is passed
// to New.
type Config struct {
	// Client reads and updates ClusterRoles. Required.
	Client kubernetes.Interface
	// Informers, if set, is the shared informer factory whose ClusterRole
	// informer the controller uses; New registers the informer, and Run
	// starts the factory's informers that are not running yet (with Run's
	// context) but does not shut the factory down. If nil, the controller
	// builds its own factory from Client and owns it.
	Informers informers.SharedInformerFactory
	// Logger receives the controller's logs. If nil, logs are discarded.
	Logger *slog.Logger
	// ResyncPeriod is how often an own factory replays its cache. If 0,
	// DefaultResyncPeriod is used. Ignored when Informers is set.
	ResyncPeriod time.Duration
}

// Controller keeps aggregated ClusterRoles up to date. Create it with New
// and start it with Run.
type Controller struct {
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	owned    bool
	informer cache.SharedIndexInformer
	lister   rbaclisters.ClusterRoleLister
	log      *slog.Logger

	ready chan struct{}

	queue workqueue.TypedRateLimitingInterface[string] // set by Run
}

// New validates cfg and returns a Controller. It starts nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("clusterroleaggregation: Config.Client is required"))
	}
	if cfg.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("clusterroleaggregation: Config.ResyncPeriod is %v, want >= 0", cfg.ResyncPeriod))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		client:  cfg.Client,
		factory: cfg.Informers,
		log:     log.With("component", "clusterrole-aggregation-controller"),
		ready:   make(chan struct{}),
	}
	if c.factory == nil {
		resync := cfg.ResyncPeriod
		if resync == 0 {
			resync = DefaultResyncPeriod
		}
		c.factory = informer.NewFactory(cfg.Client, resync)
		c.owned = true
	}
	crs := c.factory.Rbac().V1().ClusterRoles()
	c.informer, c.lister = crs.Informer(), crs.Lister()
	// A second controller on the same factory finds the index there.
	if err := c.informer.AddIndexers(cache.Indexers{aggregatedIndex: indexAggregated}); err != nil {
		if _, ok := c.informer.GetIndexer().GetIndexers()[aggregatedIndex]; !ok {
			return nil, fmt.Errorf("clusterroleaggregation: add index: %w", err)
		}
	}
	return c, nil
}

func indexAggregated(obj interface{}) ([]string, error) {
	if cr, ok := obj.(*rbacv1.ClusterRole); ok && cr.AggregationRule != nil {
		return []string{"true"}, nil
	}
	return nil, nil
}

// Ready returns a channel that is closed once the ClusterRole cache has
// synced and the controller is about to work.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run keeps aggregated ClusterRoles up to date until ctx ends. It must be
// called at most once. On return its worker has finished and its event
// handler is removed; an owned informer factory has stopped. Run returns nil
// when ctx ends after a successful start, and an error if the cache could
// not be synced.
func (c *Controller) Run(ctx context.Context) error {
	c.queue = queue.New[string]("clusterroleaggregation", minRetryDelay, maxRetryDelay)
	defer c.queue.ShutDown()
	if c.owned {
		defer c.factory.Shutdown() // after ctx ends; waits for the informer goroutines
	}

	err := queue.Run(ctx, queue.Config[string]{
		Queue: c.queue,
		Sync:  c.sync,
		Handlers: []queue.Handler{{
			Informer: c.informer,
			Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    c.changed,
				UpdateFunc: func(_, obj any) { c.changed(obj) },
				DeleteFunc: c.changed,
			},
		}},
		Informers: []queue.Starter{c.factory},
		Start: func(context.Context) error {
			c.log.Info("started")
			return nil
		},
		Ready: c.ready,
		Failed: func(name string, err error) {
			c.log.Error("aggregate clusterrole", "name", name, "err", err)
		},
		Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("clusterroleaggregation: %w", err)
	}
	return nil
}

// changed queues every aggregated ClusterRole: any change of any
// ClusterRole (its rules, its labels, its existence) may change their
// unions, and there are few of them.
func (c *Controller) changed(any) {
	objs, err := c.informer.GetIndexer().ByIndex(aggregatedIndex, "true")
	if err != nil {
		c.log.Error("list aggregated clusterroles", "err", err)
		return
	}
	for _, obj := range objs {
		c.queue.Add(obj.(*rbacv1.ClusterRole).Name)
	}
}

// sync sets the rules of one aggregated ClusterRole to its union.
func (c *Controller) sync(ctx context.Context, name string) error {
	cr, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get clusterrole %q from cache: %w", name, err)
	}
	if cr.AggregationRule == nil {
		return nil
	}
	rules, err := c.union(cr)
	if err != nil {
		// The apiserver validates selectors; retrying would not help.
		c.log.Error("invalid aggregation rule", "name", name, "err", err)
		return nil
	}
	if equality.Semantic.DeepEqual(rules, cr.Rules) {
		return nil
	}
	update := cr.DeepCopy()
	update.Rules = rules
	if _, err := c.client.RbacV1().ClusterRoles().Update(ctx, update, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update clusterrole %q: %w", name, err)
	}
	c.log.Info("aggregated rules updated", "name", name, "rules", len(rules))
	return nil
}

// union collects the rules of the roles cr selects, cr itself excepted.
func (c *Controller) union(cr *rbacv1.ClusterRole) ([]rbacv1.PolicyRule, error) {
	var rules []rbacv1.PolicyRule
	for i := range cr.AggregationRule.ClusterRoleSelectors {
		sel, err := metav1.LabelSelectorAsSelector(&cr.AggregationRule.ClusterRoleSelectors[i])
		if err != nil {
			return nil, fmt.Errorf("selector %d: %w", i, err)
		}
		matched, err := c.lister.List(sel)
		if err != nil {
			return nil, fmt.Errorf("list clusterroles: %w", err)
		}
		slices.SortFunc(matched, func(a, b *rbacv1.ClusterRole) int { return strings.Compare(a.Name, b.Name) })
		for _, m := range matched {
			if m.Name == cr.Name {
				continue
			}
			for _, r := range m.Rules {
				if !slices.ContainsFunc(rules, func(have rbacv1.PolicyRule) bool { return equality.Semantic.DeepEqual(have, r) }) {
					rules = append(rules, *r.DeepCopy())
				}
			}
		}
	}
	return rules, nil
}
