package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"

	"tether/apiserver/registry/allocator"
)

// Run repairs the allocations at once and then every RepairInterval until
// ctx ends. Storage must have been called.
func (a *ServiceAllocator) Run(ctx context.Context) {
	wait := a.cfg.RepairInterval
	for {
		if err := a.Repair(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("repairing service allocations", "err", err)
			wait = min(10*time.Second, a.cfg.RepairInterval)
		} else {
			wait = a.cfg.RepairInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Repair reconciles the allocation records with the Services: it records
// values Services hold without a record (Services written before
// allocation existed, or a record lost), gives records of vanished owners
// to the Service that holds the value, and releases values no Service
// holds. Records younger than the grace period are left alone, since their
// Service may not be written yet. Two Services holding one value are
// reported, not changed.
func (a *ServiceAllocator) Repair(ctx context.Context) error {
	if a.store == nil {
		return errors.New("registry: service allocator has no storage")
	}
	// Records first: a record written after this read cannot be taken for
	// a leak.
	ipRecs, err := a.ips.Set().List(ctx)
	if err != nil {
		return err
	}
	portRecs, err := a.ports.Set().List(ctx)
	if err != nil {
		return err
	}
	obj, err := a.store.List(genericrequest.WithNamespace(ctx, metav1.NamespaceAll), &metainternalversion.ListOptions{})
	if err != nil {
		return fmt.Errorf("registry: list services: %w", err)
	}
	list, ok := obj.(*corev1.ServiceList)
	if !ok {
		return fmt.Errorf("registry: unexpected service list %T", obj)
	}
	ipHolders := map[string][]allocator.Owner{}
	portHolders := map[string][]allocator.Owner{}
	for i := range list.Items {
		svc := &list.Items[i]
		owner, held := svcOwner(svc), svcHeld(svc)
		for _, ip := range held.ips {
			if !a.ips.Contains(ip) {
				a.log.Warn("cluster IP is outside --service-cluster-ip-range", "namespace", svc.Namespace, "name", svc.Name, "ip", ip.String(), "range", a.ips.String())
				continue
			}
			ipHolders[ip.String()] = append(ipHolders[ip.String()], owner)
		}
		for _, p := range held.ports {
			if !a.ports.Contains(p) {
				a.log.Warn("node port is outside --service-node-port-range", "namespace", svc.Namespace, "name", svc.Name, "port", p, "range", a.ports.String())
				continue
			}
			ps := strconv.Itoa(p)
			portHolders[ps] = append(portHolders[ps], owner)
		}
	}
	ips := repairSet{a: a, kind: "cluster IP", set: a.ips.Set(), records: ipRecs, holders: ipHolders}
	ports := repairSet{a: a, kind: "node port", set: a.ports.Set(), records: portRecs, holders: portHolders}
	return errors.Join(ips.repair(ctx), ports.repair(ctx))
}

// repairSet is the repair of one kind of value.
type repairSet struct {
	a       *ServiceAllocator
	kind    string
	set     *allocator.Set
	records map[string]allocator.Record
	holders map[string][]allocator.Owner
}

func (r repairSet) repair(ctx context.Context) error {
	var errs []error
	log := r.a.log
	now := r.a.now()
	young := func(rec allocator.Record) bool { return now.Sub(rec.Time) < r.a.grace }
	for _, v := range sortedKeys(r.holders) {
		owners := r.holders[v]
		if len(owners) > 1 {
			log.Error(r.kind+" is held by more than one Service", "value", v, "services", fmt.Sprint(owners))
		}
		rec, found := r.records[v]
		switch {
		case found && slices.Contains(owners, rec.Owner):
			continue
		case found && young(rec):
			// Its owner may be about to take it: a race the Services'
			// own writes will show.
			continue
		case found:
			log.Info("recording a "+r.kind+" held by a Service in place of its stale owner", "value", v,
				"namespace", owners[0].Namespace, "name", owners[0].Name, "stale", rec.Owner.String())
			if err := r.set.Release(ctx, v, rec.Owner); err != nil {
				errs = append(errs, err)
				continue
			}
		default:
			log.Info("recording an unrecorded "+r.kind, "value", v, "namespace", owners[0].Namespace, "name", owners[0].Name)
		}
		if _, err := r.set.Reserve(ctx, v, owners[0]); err != nil && !errors.Is(err, allocator.ErrAllocated) {
			errs = append(errs, err)
		}
	}
	for _, v := range sortedKeys(r.records) {
		rec := r.records[v]
		if _, held := r.holders[v]; held || young(rec) {
			continue
		}
		log.Info("releasing a leaked "+r.kind, "value", v, "owner", rec.Owner.String())
		if err := r.set.Release(ctx, v, rec.Owner); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
