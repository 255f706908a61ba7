// Package runtime is the kubelet's container runtime: it runs each
// container with runc from an OCI bundle, under a small per-container shim
// process, and reports container state without calling runc.
//
// # Layout on disk
//
// Every container has a bundle directory StateDir/<id>/ holding:
//
//	config.json     the OCI runtime spec (runtime-spec v1.3.0) given to runc
//	meta.json       labels, creation time, cgroup and log paths (written by Start)
//	shim.json       what the shim needs to run the container (written by Start)
//	rootfs/         overlayfs mount of the image layers (upper/ and work/ beside it)
//	shim.pid        the shim's pid and start time (written by the shim)
//	init.pid        the container init's pid (written by runc)
//	started.json    the container init's pid, start time and StartedAt (shim)
//	exit.json       exit code, FinishedAt, OOMKilled, reason and message (shim,
//	                or Start when the container never ran)
//	runc.log        runc's own log (JSON lines)
//	shim.log        the shim's own diagnostics
//	attach.sock     the shim's attach socket (0600; removed when the container exits)
//
// runc keeps its state under Config.RuncRoot.
//
// # The shim
//
// Start launches Config.ShimCommand with the arguments "run <bundle>" in a
// new session, with stdin on /dev/null and stdout and stderr on shim.log,
// and reaps it when it exits through a pidfd on the runtime's poller (no
// thread per container). Nothing ties the shim's life to the agent's: the
// agent can exit or restart without touching its containers (the shims are
// re-parented), and a new Runtime on the same StateDir adopts
// them. The shim makes itself a child subreaper, runs "runc run -d", reports
// the container's pid (or runc's error) back to Start over a pipe, copies
// the container's stdout and stderr to the CRI-format log file, waits for
// the container's init to exit, reads the memory cgroup's OOM-kill counter
// before anyone can delete the cgroup, writes exit.json atomically and
// exits.
//
// # Stdio, TTY and attach
//
// Without TTY the container's stdout and stderr are pipes read by the
// shim; its stdin is /dev/null, or with Stdin a pipe whose write end the
// shim keeps. With TTY the shim passes runc a console socket (runc run -d
// --console-socket), receives the pty master over it (SCM_RIGHTS) and
// copies the terminal's output into the log as stream "stdout".
//
// Attach talks to the shim over attach.sock, so it works across agent
// restarts. (Paths longer than a sockaddr_un allows are reached through
// /proc/self/fd/<dir fd>/attach.sock.) The protocol is frames of a 1-byte
// type, a 4-byte big-endian length and the payload: the client sends stdin
// data, "stdin ended" and resizes (rows, columns); the shim sends stdout
// and stderr data as the container writes it (in addition to logging it)
// and, after the container exited and its output was sent, an exit frame.
// Input from all attached clients goes to the container's stdin pipe or
// pty master; resizes are applied with TIOCSWINSZ on the master. With
// StdinOnce, the end of a client's stdin closes the container's stdin
// pipe (with TTY, where a pty cannot be half-closed, the shim types the
// terminal's EOF character) and later input is dropped. The shim queues
// at most 4 MiB of output for a client that reads slowly and disconnects
// it beyond that: clients never hold up the container or its log.
//
// # Failed starts
//
// When runc cannot start the container (for example, the executable does
// not exist), Start returns an error that wraps ErrStartFailed and carries
// runc's message. The container stays listed, in state StateExited with exit
// code 128, reason "StartError" and runc's message, the way upstream
// reports StartError; the runc state, rootfs mount and cgroups are already
// gone, and the caller removes the record with Remove.
//
// # Logs
//
// Container output is written to ContainerSpec.LogPath in the CRI log
// format, one line per output line:
//
//	2026-11-27T08:02:26.123456789Z stdout F hello
//
// A line longer than 16 KiB is split into "P" (partial) records followed by
// an "F" record; a last line without a newline is written as "P" when the
// stream ends. When the file would grow beyond LogMaxSize (default 10 MiB)
// it is renamed to LogPath+".1" (replacing the previous one) and a new file
// is started, so at most two files exist per container. Remove leaves log
// files in place.
//
// Status and List read only the files above and /proc; they never run runc.
package runtime
