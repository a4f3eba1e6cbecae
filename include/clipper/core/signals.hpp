#pragma once
// Stop requests: SIGTERM, SIGUSR1 and SIGINT only set a flag (async-signal-safe); the training loop
// reads it at step boundaries, agrees with the other ranks, saves and exits.
namespace clipper::core {

// Installs the handlers (idempotent).
void install_stop_handlers();
// The signal number that asked to stop, or 0.
int stop_signal();
// Sets the flag as a signal would (tests, wall-time limit).
void request_stop(int signal_number);
void clear_stop();

}  // namespace clipper::core
