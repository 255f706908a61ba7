// Package allocator hands out Service cluster IPs and node ports. Every
// allocated value is one etcd key (for example
// /registry/tether/serviceips/10.96.0.10) created with a create-if-absent
// transaction and naming the Service that owns it, so two API servers
// sharing etcd, or one server before and after a restart, never hand out
// the same value twice. Package registry allocates before it writes a
// Service and releases when the Service goes; its repair loop reconciles
// the keys with the Services.
package allocator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"tether/apiserver/storage"
)

var (
	// ErrAllocated is returned when a requested value belongs to another
	// owner.
	ErrAllocated = errors.New("allocator: already allocated")
	// ErrFull is returned when no value of a range is free.
	ErrFull = errors.New("allocator: range is full")
)

// RangeError is returned for a requested value outside the range.
type RangeError struct {
	// Value is the requested value, Range the valid range, both as
	// written in messages (10.96.0.0/12, 30000-32767).
	Value, Range string
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("allocator: %s is not in the valid range %s", e.Value, e.Range)
}

// Owner identifies the holder of an allocation: a Service.
type Owner struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
}

func (o Owner) String() string { return o.Namespace + "/" + o.Name + "/" + string(o.UID) }

// Record is what an allocation key holds.
type Record struct {
	Owner
	// Time is when the value was allocated. The repair loop leaves young
	// allocations alone: their Service may still be on its way to etcd.
	Time time.Time `json:"time"`
}

// Set is a set of values reserved in etcd, one key per value under a
// prefix. It is safe for concurrent use, also by several processes.
type Set struct {
	client *clientv3.Client
	prefix string
	now    func() time.Time
}

// NewSet returns the set stored under prefix, which should end in "/".
func NewSet(client *clientv3.Client, prefix string) *Set {
	return &Set{client: client, prefix: prefix, now: time.Now}
}

func (s *Set) key(value string) string { return s.prefix + value }

// Reserve records value as owner's. It reports whether it created the
// record: false with a nil error means owner held it already. A value held
// by another owner gives ErrAllocated.
func (s *Set) Reserve(ctx context.Context, value string, owner Owner) (bool, error) {
	rec, err := json.Marshal(Record{Owner: owner, Time: s.now().UTC()})
	if err != nil {
		return false, fmt.Errorf("allocator: encode record: %w", err)
	}
	key := s.key(value)
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(rec))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("allocator: reserve %s: %w", key, err)
	}
	if resp.Succeeded {
		return true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 1 {
		if cur, err := decode(kvs[0].Value); err == nil && cur.Owner == owner {
			return false, nil
		}
	}
	return false, ErrAllocated
}

// Get returns the record of value, and whether there is one.
func (s *Set) Get(ctx context.Context, value string) (Record, bool, error) {
	resp, err := s.client.Get(ctx, s.key(value))
	if err != nil {
		return Record{}, false, fmt.Errorf("allocator: get %s: %w", s.key(value), err)
	}
	if len(resp.Kvs) == 0 {
		return Record{}, false, nil
	}
	rec, err := decode(resp.Kvs[0].Value)
	return rec, true, err
}

// Release deletes the record of value if owner holds it; a value that is
// free or held by someone else is left alone.
func (s *Set) Release(ctx context.Context, value string, owner Owner) error {
	key := s.key(value)
	for {
		resp, err := s.client.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("allocator: release %s: %w", key, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		kv := resp.Kvs[0]
		if rec, err := decode(kv.Value); err != nil || rec.Owner != owner {
			return nil
		}
		// Delete only what was read: the record may have changed hands.
		txn, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpDelete(key)).
			Commit()
		if err != nil {
			return fmt.Errorf("allocator: release %s: %w", key, err)
		}
		if txn.Succeeded {
			return nil
		}
	}
}

// List returns every record, by value.
func (s *Set) List(ctx context.Context) (map[string]Record, error) {
	resp, err := s.client.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("allocator: list %s: %w", s.prefix, err)
	}
	out := make(map[string]Record, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		// A record that does not decode still takes its value.
		rec, _ := decode(kv.Value)
		out[strings.TrimPrefix(string(kv.Key), s.prefix)] = rec
	}
	return out, nil
}

// values returns the allocated values, without reading the records.
func (s *Set) values(ctx context.Context) ([]string, error) {
	resp, err := s.client.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("allocator: list %s: %w", s.prefix, err)
	}
	out := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = strings.TrimPrefix(string(kv.Key), s.prefix)
	}
	return out, nil
}

func decode(b []byte) (Record, error) {
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, fmt.Errorf("allocator: decode record: %w", err)
	}
	return rec, nil
}

// NewClient connects to the etcd that b describes. The caller closes the
// client.
func NewClient(b storage.Backend) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   b.Servers,
		DialTimeout: 20 * time.Second,
		Logger:      zap.NewNop(),
	}
	if b.CAFile != "" || b.CertFile != "" || b.KeyFile != "" {
		tlsInfo := transport.TLSInfo{CertFile: b.CertFile, KeyFile: b.KeyFile, TrustedCAFile: b.CAFile}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("allocator: etcd TLS: %w", err)
		}
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("allocator: etcd client: %w", err)
	}
	return c, nil
}

// Prefix returns the key prefix of tether's allocations for b:
// <storage prefix>/tether/.
func Prefix(b storage.Backend) string {
	return strings.TrimSuffix(b.Config().Prefix, "/") + "/tether/"
}
