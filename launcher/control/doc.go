// Package control is the launcher's control API: how the controller learns the guest's state and how the
// `virt-launcher pause|unpause|console` subcommands (run through `kubectl exec`) act on it.
//
// The same HTTP API is served on two listeners:
//   - TCP (DefaultPort 8186), for the controller: on 127.0.0.1 when it comes through pods/portforward (the
//     default), on every pod address with --launcher-connect=pod-ip. Every request needs
//     "Authorization: Bearer <token>", the per-VMI secret mounted at /var/run/kvirt/secret/token,
//     compared in constant time. Without it: 401, and the connection is closed.
//   - A Unix socket inside the pod (DefaultSocket), for exec'd subcommands; access is controlled by the
//     socket's file mode (0600), no token.
//
// Endpoints (JSON bodies; errors are {"error": "..."} with 409 for a request that conflicts with the state,
// KubeVirt's messages):
//
//	GET  /v1/status              the current Status
//	GET  /v1/watch               newline-delimited Status objects: the current one, then every change
//	POST /v1/pause               pause the vCPUs          ("VM is not running", "VMI is already paused")
//	POST /v1/unpause             resume them              ("VM is not running", "VMI is not paused")
//	POST /v1/shutdown?grace=S    graceful shutdown (ACPI power button, hard stop after S seconds;
//	                             without grace: the VMI's terminationGracePeriodSeconds)
//	POST /v1/grace?seconds=S     lower the grace period to S (the VMI's was lowered): a shutdown under
//	                             way ends at its start + S if earlier (S=0: now); a longer S is ignored
//	POST /v1/stop                hard stop now (through the Shutdowner with grace 0 when there is one)
//	GET  /v1/console             "Connection: Upgrade", "Upgrade: kvirt-console": after 101 Switching Protocols
//	                             the connection carries raw serial bytes both ways (works while paused)
//
// Whoever reaches a listener can open connections before authenticating, so each listener is bounded
// (Limits): header and request deadlines, an idle timeout, a header size limit and a connection cap.
//
// The VMM side implements VM; the launcher keeps the Status in a Board, which the server publishes.
package control
