package storage

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// expiredFirst makes calls on a KV whose context has already ended fail
// before they reach etcd. A gRPC client does that by itself; the in-process
// client proposes a write even for a request that has already answered 504
// Timeout, which would then create the object after all.
type expiredFirst struct{ clientv3.KV }

func (k expiredFirst) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return k.KV.Put(ctx, key, val, opts...)
}

func (k expiredFirst) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return k.KV.Get(ctx, key, opts...)
}

func (k expiredFirst) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return k.KV.Delete(ctx, key, opts...)
}

func (k expiredFirst) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	if err := ctx.Err(); err != nil {
		return clientv3.OpResponse{}, err
	}
	return k.KV.Do(ctx, op)
}

func (k expiredFirst) Txn(ctx context.Context) clientv3.Txn {
	return expiredFirstTxn{Txn: k.KV.Txn(ctx), ctx: ctx}
}

type expiredFirstTxn struct {
	clientv3.Txn
	ctx context.Context
}

func (t expiredFirstTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	return expiredFirstTxn{Txn: t.Txn.If(cs...), ctx: t.ctx}
}

func (t expiredFirstTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	return expiredFirstTxn{Txn: t.Txn.Then(ops...), ctx: t.ctx}
}

func (t expiredFirstTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	return expiredFirstTxn{Txn: t.Txn.Else(ops...), ctx: t.ctx}
}

func (t expiredFirstTxn) Commit() (*clientv3.TxnResponse, error) {
	if err := t.ctx.Err(); err != nil {
		return nil, err
	}
	return t.Txn.Commit()
}
