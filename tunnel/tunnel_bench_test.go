package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"tether/pki"
)

// BenchmarkTunnel measures what the tunnel costs the API server's
// connections to a node, against the same connection made directly over
// TLS on loopback in the same run (the limit: a node the API server can
// reach): bulk throughput on one stream and on 8 at once, a small round
// trip on an open connection (a request on a kept-alive kubelet
// connection), and opening a connection plus one round trip. It runs
// once (-benchtime 1x) and prints a table; figures are recorded in
// docs/performance.md.
func BenchmarkTunnel(b *testing.B) {
	e := newEnv(b)
	echo := startBackend(b, false)
	c := e.newClient(certVar(e.nodeCert()), echo.addr)
	run(b, c)
	if !waitUntil(10*time.Second, func() bool { return e.tun.Connected("n1") }) {
		b.Fatal("the tunnel did not come up")
	}

	// The limit: a TLS echo on loopback, the same Go echo behind TLS.
	serving := issue(b, e.serverCA, pki.CertRequest{CommonName: "127.0.0.1", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: time.Hour})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serving}})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(conn, conn); conn.Close() }()
		}
	}()
	// The same hops as the tunnel without the multiplexing: a TLS
	// connection to a relay that connects to the echo over TCP.
	relay, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serving}})
	if err != nil {
		b.Fatal(err)
	}
	defer relay.Close()
	go func() {
		for {
			conn, err := relay.Accept()
			if err != nil {
				return
			}
			go func() {
				target, err := net.Dial("tcp", echo.addr.String())
				if err != nil {
					conn.Close()
					return
				}
				pipe(conn, target)
			}()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(e.serverCA.Cert)
	dialTLS := func() (net.Conn, error) {
		return tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	}
	dialRelay := func() (net.Conn, error) {
		return tls.Dial("tcp", relay.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	}
	dialTunnel := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return e.tun.DialNode(ctx, "n1", echo.addr.String())
	}
	b.ResetTimer()
	out := os.Stdout
	fmt.Fprintf(out, "tunnel: yamux over mutual TLS on loopback, agent and API server in this process; echo target on 127.0.0.1\n")

	// 1. Bulk throughput.
	const bulk = 64 << 20
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	throughput := func(dial func() (net.Conn, error), streams int) (float64, error) {
		var wg sync.WaitGroup
		errs := make(chan error, streams)
		start := time.Now()
		for range streams {
			wg.Go(func() {
				conn, err := dial()
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close()
				go func() {
					for sent := 0; sent < bulk/streams; sent += len(payload) {
						if _, err := conn.Write(payload); err != nil {
							return
						}
					}
				}()
				if _, err := io.CopyN(io.Discard, conn, bulk/int64(streams)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return 0, err
		}
		return float64(bulk) / (1 << 20) / time.Since(start).Seconds(), nil
	}
	fmt.Fprintf(out, "\n%-30s %11s %11s %11s %12s %12s\n", "echo of 64 MiB, MiB/s", "direct TLS", "TLS relay", "tunnel", "tun/direct", "tun/relay")
	for _, streams := range []int{1, 8} {
		var got [3]float64
		for i, dial := range []func() (net.Conn, error){dialTLS, dialRelay, dialTunnel} {
			throughput(dial, streams) // warm-up
			if got[i], err = throughput(dial, streams); err != nil {
				b.Fatalf("%d stream(s), connection %d: %v", streams, i, err)
			}
		}
		fmt.Fprintf(out, "%-30s %11.0f %11.0f %11.0f %11.0f%% %11.0f%%\n", fmt.Sprintf("%d stream(s)", streams),
			got[0], got[1], got[2], 100*got[2]/got[0], 100*got[2]/got[1])
	}

	// 2. Round trips of 64 bytes on an open connection, and opening a
	// connection plus one round trip.
	const rounds = 2000
	small := payload[:64]
	buf := make([]byte, 64)
	roundTrip := func(conn net.Conn) error {
		if _, err := conn.Write(small); err != nil {
			return err
		}
		_, err := io.ReadFull(conn, buf)
		return err
	}
	percentiles := func(d []time.Duration) (time.Duration, time.Duration) {
		slices.Sort(d)
		return d[len(d)/2], d[len(d)*99/100]
	}
	open := func(dial func() (net.Conn, error)) (p50, p99 time.Duration, err error) {
		conn, err := dial()
		if err != nil {
			return 0, 0, err
		}
		defer conn.Close()
		lat := make([]time.Duration, rounds)
		for i := range lat {
			start := time.Now()
			if err := roundTrip(conn); err != nil {
				return 0, 0, err
			}
			lat[i] = time.Since(start)
		}
		p50, p99 = percentiles(lat)
		return p50, p99, nil
	}
	fresh := func(dial func() (net.Conn, error)) (p50, p99 time.Duration, err error) {
		lat := make([]time.Duration, rounds/4)
		for i := range lat {
			start := time.Now()
			conn, err := dial()
			if err != nil {
				return 0, 0, err
			}
			err = roundTrip(conn)
			conn.Close()
			if err != nil {
				return 0, 0, err
			}
			lat[i] = time.Since(start)
		}
		p50, p99 = percentiles(lat)
		return p50, p99, nil
	}
	fmt.Fprintf(out, "\n%-34s %21s %21s %21s\n", "64-byte round trip, p50 / p99", "direct TLS", "TLS relay", "tunnel")
	for _, m := range []struct {
		name    string
		measure func(func() (net.Conn, error)) (time.Duration, time.Duration, error)
	}{
		{fmt.Sprintf("on an open connection (%d)", rounds), open},
		{fmt.Sprintf("connect + round trip (%d)*", rounds/4), fresh},
	} {
		fmt.Fprintf(out, "%-34s", m.name)
		for i, dial := range []func() (net.Conn, error){dialTLS, dialRelay, dialTunnel} {
			p50, p99, err := m.measure(dial)
			if err != nil {
				b.Fatalf("%s, connection %d: %v", m.name, i, err)
			}
			fmt.Fprintf(out, " %9s / %9s", p50.Round(time.Microsecond), p99.Round(time.Microsecond))
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "* direct and relay: TCP connect and a full TLS handshake; tunnel: a new stream and the agent's TCP connect (a kubelet's TLS would be inside it)\n")
}
