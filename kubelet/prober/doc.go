// Package prober runs the liveness, readiness and startup probes of a node's
// containers, as the upstream kubelet does.
//
// [Probe] runs one attempt of a probe (exec, httpGet, tcpSocket or grpc).
// [Manager] keeps one worker per running container and probe kind, applies
// the probe's timing and thresholds, gates liveness and readiness behind the
// startup probe, and reports flips of a result to the kubelet's pod sync
// loop, which restarts containers whose liveness or startup probe failed and
// publishes readiness in the pod status (and so in the Service endpoints).
//
// Probes run from the node to the pod's address, the way upstream's do; they
// are not a path to the apiserver and carry no cluster credentials.
package prober
