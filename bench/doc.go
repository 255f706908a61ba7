// Package bench measures tether's API server under load: GET, LIST, CREATE
// and WATCH fan-out through the real HTTPS handler chain with the admin
// client certificate, next to the raw etcd client doing the same reads and
// writes against the same embedded etcd member in the same run. The ratio
// between the two is the figure that matters; absolute numbers depend on
// the machine.
//
// Run it with `make bench`. It has no tests, only BenchmarkAPIServer, which
// does the whole run once and prints a table; misses against the targets
// are reported, never failed. Set TETHER_BENCH_PROFILE to a directory to get
// a CPU profile of each phase.
package bench
